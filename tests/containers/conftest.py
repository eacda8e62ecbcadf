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
from collections.abc import Iterator

import pytest

from podman import image_exists, podman_env, remove_test_containers
from support import REPO

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
