"""The serving image serves a model version with exactly the container the operator renders
for it: command, args, env, securityContext and volumes, mapped to podman by podman.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aliasop.builders import Owner, PinnedVersion, ServingDefaults, get_deployment
from aliasop.models import ModelDeploymentSpec
from aliasop.settings import Settings
from aliasop_dev import bikes, local

from podman import Container, readiness_url, run_options

# Includes building the images in the session fixture when they are not built yet.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


def test_serving_image_serves_the_rendered_version(
    images: tuple[str, str],
    mlflow_uri: str,
    model_name: str,
    two_versions: tuple[bikes.RegisteredVersion, bikes.RegisteredVersion],
    containers: list[Container],
) -> None:
    _, serving_image = images
    v1, v2 = two_versions  # @champion -> v1: the container must serve the version it pins
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
    container = pod_spec["containers"][0]
    assert f"models:/{model_name}/{v2.version}" in container["args"]

    run = run_options(pod_spec, container["name"])
    # What the pod spec asks for reaches podman: non-root, read-only root, no capabilities,
    # no privilege escalation, /tmp an emptyDir.
    for option in (
        ["--user", "10001:10001"],
        ["--read-only"],
        ["--cap-drop", "ALL"],
        ["--security-opt", "no-new-privileges"],
        ["--entrypoint", '["mlflow"]'],
    ):
        assert any(run.options[i : i + len(option)] == option for i in range(len(run.options)))
    assert any(o.startswith("type=tmpfs,destination=/tmp") for o in run.options)

    server = Container(run).start()
    containers.append(server)
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

    # The process inside runs as the pod spec says, and cannot write outside its emptyDir.
    assert server.exec("id", "-u").stdout.strip() == "10001"
    assert server.exec("touch", "/opt/serving/written").returncode != 0
    assert server.exec("touch", "/tmp/written").returncode == 0
