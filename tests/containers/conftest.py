"""The container tier: aliasop's images, built from the Dockerfile with podman, run the way the
manifests and the operator run them, against the test cluster and a real MLflow server.

Without podman (or the base image images/setup.sh makes) the tier is skipped with the reason;
with ALIASOP_REQUIRE_CONTAINERS=1 or CI=true (.ci/run) it fails instead, so CI never skips it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
import uuid
from collections.abc import Iterator

import pytest

from aliasop_dev import bikes, local

from podman import image_exists, podman_env, remove_test_containers
from support import REPO, Cluster

VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
OPERATOR_IMAGE = f"aliasop:{VERSION}"
SERVING_IMAGE = f"aliasop-serving:{VERSION}"


def containers_required() -> bool:
    return os.environ.get("ALIASOP_REQUIRE_CONTAINERS") == "1" or os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> None:
    if containers_required():
        pytest.fail(f"{reason} (required here: CI=true or ALIASOP_REQUIRE_CONTAINERS=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Both images, built from the working tree by images/build.sh (seconds when nothing
    changed); the operator's and the serving image's names."""
    if shutil.which("podman") is None:
        skip_or_fail("podman is not installed: run images/setup.sh (as root) to run this tier")
    base = podman_env()["base_image"][0]
    if not image_exists(base):
        skip_or_fail(f"no base image {base} in podman's store: run images/setup.sh")
    log = tmp_path_factory.mktemp("images") / "build.log"
    with log.open("w") as out:
        result = subprocess.run(
            [str(REPO / "images" / "build.sh")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=1200,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        pytest.fail(f"images/build.sh failed ({log}):\n{tail}")
    remove_test_containers()
    yield OPERATOR_IMAGE, SERVING_IMAGE
    remove_test_containers()


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server on loopback, which containers on the host network reach."""
    port = local.free_port()
    server = local.mlflow_server(tmp_path_factory.mktemp("mlflow"), port).start()
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/health", timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def installed(cluster: Cluster) -> Cluster:
    """The CRD and manifests/ applied the way a user installs them."""
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.aliasop.io")
    cluster.kubectl("apply", "-k", str(REPO / "manifests"))
    return cluster


@pytest.fixture
def model_name() -> str:
    return f"bikes-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def two_versions(
    mlflow_uri: str, model_name: str
) -> tuple[bikes.RegisteredVersion, bikes.RegisteredVersion]:
    """Versions 1 and 2 of a fresh model, which predict differently; @champion -> 1."""
    v1 = bikes.train_and_register(mlflow_uri, model_name, kind="linear")
    v2 = bikes.train_and_register(mlflow_uri, model_name, kind="hourly")
    assert v1.predictions != v2.predictions
    bikes.set_alias(mlflow_uri, model_name, "champion", v1.version)
    return v1, v2
