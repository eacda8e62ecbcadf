"""The serving image serves a model version with exactly the pod the operator renders for it:
the download init container, then the server, with their command, args, env,
securityContext and volumes, mapped to podman by podman.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aliasop.builders import MODEL_DIR, ServingDefaults, get_deployment
from aliasop.domain import Owner, PinnedVersion
from aliasop.models import ModelDeploymentSpec
from aliasop.settings import Settings
from aliasop_dev import bikes, local

from podman import Pod, readiness_url

# Includes building the images in the session fixture when they are not built yet.
pytestmark = pytest.mark.timeout(900)


def contains(options: list[str], *option: str) -> bool:
    return any(options[i : i + len(option)] == list(option) for i in range(len(options)))


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.remove()


def test_serving_image_serves_the_rendered_version(
    images: tuple[str, str],
    mlflow_uri: str,
    model_name: str,
    two_versions: tuple[bikes.RegisteredVersion, bikes.RegisteredVersion],
    pods: list[Pod],
    tmp_path: Path,
) -> None:
    _, serving_image = images
    v1, v2 = two_versions  # @champion -> v1: the pod must serve the version it pins
    spec = ModelDeploymentSpec.model_validate(
        {"model": f"models:/{model_name}@champion", "serving": {"port": local.free_port()}}
    )
    # The operator's own default serving image, as it renders it: the image built here.
    defaults = ServingDefaults(image=Settings().serving_image, tracking_uri=mlflow_uri)
    assert defaults.image == serving_image
    deployment = get_deployment(
        Owner("bikes", "ml", "0000"), spec, PinnedVersion(v2.version, v2.run_id), defaults
    )
    pod_spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    (download,) = pod_spec["initContainers"]
    (container,) = pod_spec["containers"]
    assert f"models:/{model_name}/{v2.version}" in download["args"]

    pod = Pod(pod_spec, tmp_path / "pod")
    for name in (download["name"], container["name"]):
        options = pod.run(name).options
        # What the pod spec asks for reaches podman: non-root, read-only root, no
        # capabilities, no privilege escalation, the emptyDirs.
        assert contains(options, "--user", "10001:10001")
        assert contains(options, "--read-only")
        assert contains(options, "--cap-drop", "ALL")
        assert contains(options, "--security-opt", "no-new-privileges")
        assert any(o.endswith(":/tmp") for o in options)
    assert contains(pod.run(download["name"]).options, "--entrypoint", '["mlflow"]')
    # The server is PID 1 of its container, on the image's PATH.
    assert contains(pod.run(container["name"]).options, "--entrypoint", '["uvicorn"]')
    assert any(o.endswith(f":{MODEL_DIR}:ro") for o in pod.run(container["name"]).options)

    pods.append(pod)
    pod.start()
    server = pod.containers[container["name"]]
    server.wait_ready(readiness_url(container), timeout=180)
    port = container["ports"][0]["containerPort"]
    response = httpx.post(
        f"http://127.0.0.1:{port}/invocations",
        json={"dataframe_split": json.loads(v2.input_example.to_json(orient="split", index=False))},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == pytest.approx(v2.predictions)
    assert response.json()["predictions"] != pytest.approx(v1.predictions)

    # The server runs as the pod spec says, and writes nowhere but its writable emptyDir:
    # not the root filesystem, not the model the init container downloaded.
    assert server.exec("id", "-u").stdout.strip() == "10001"
    assert server.exec("touch", "/opt/serving/written").returncode != 0
    assert server.exec("touch", f"{MODEL_DIR}/written").returncode != 0
    assert server.exec("touch", "/tmp/written").returncode == 0

    # SIGTERM reaches the server: it shuts down at once, cleanly, not SIGKILLed (137) at the
    # end of the grace period.
    started = time.monotonic()
    assert server.stop(pod_spec["terminationGracePeriodSeconds"]) == 0, server.tail()
    assert time.monotonic() - started < 15, server.tail()
    assert "Finished server process" in server.logs(), server.tail()
