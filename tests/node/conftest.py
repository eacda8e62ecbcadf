"""The real-node tier: pods that really run on the test cluster's kubelet node
(aliasop_dev.cluster.realnode), not on the kwok one.

The node is tainted, so each pod here tolerates the taint and selects the node's label
(realnode.on_real_node). Without the node (a machine that cannot run containerd, say) these tests
skip, naming the reason the cluster's `up` recorded; under ALIASOP_REQUIRE_REAL_NODE=1 (CI) they
fail.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aliasop_dev import local

from realnode import REAL_NODE, NodeMlflow, RealNode
from support import REPO, Cluster, cache_dir

VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# As `make images` tags them in podman's store, and as containerd names them once imported.
SERVING_IMAGE = f"localhost/aliasop-serving:{VERSION}"
OPERATOR_IMAGE = f"localhost/aliasop:{VERSION}"


@pytest.fixture(scope="session")
def real_node(cluster: Cluster, k8s: client.ApiClient) -> RealNode:
    """The Ready real node, or a skip (a failure in CI) naming why it is missing."""
    try:
        node = client.CoreV1Api(k8s).read_node(REAL_NODE)
    except ApiException as error:
        if error.status != 404:
            raise
        node = None
    ready = node is not None and any(
        c.type == "Ready" and c.status == "True" for c in node.status.conditions or []
    )
    if node is None or not ready:
        recorded = cache_dir() / "realnode" / "unavailable"
        why = (
            recorded.read_text().strip()
            if recorded.exists()
            else f"node {REAL_NODE} is {'not Ready' if node else 'not registered'}"
        )
        message = f"the test cluster has no real node: {why} (aliasop_dev.cluster.realnode)"
        if os.environ.get("ALIASOP_REQUIRE_REAL_NODE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    return RealNode(
        name=REAL_NODE,
        address=address,
        pod_network=ipaddress.ip_interface(f"{address}/24").network,
    )


def containers_required() -> bool:
    """As in tests/containers: CI (.ci/run) builds the images, so a missing one fails there."""
    return os.environ.get("ALIASOP_REQUIRE_CONTAINERS") == "1" or os.environ.get("CI") == "true"


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """podman with this machine's global options (images/podman.env, as images/build.sh)."""
    env = REPO / "images" / "podman.env"
    script = f'source {env}; exec podman "${{PODMAN_GLOBAL_OPTS[@]}}" "$@"'
    return subprocess.run(
        ["bash", "-c", script, "podman", *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def ctr(*args: str) -> subprocess.CompletedProcess[str]:
    """ctr against the real node's containerd (its own socket; the kubelet's namespace)."""
    sock = cache_dir() / "realnode" / "run" / "containerd" / "containerd.sock"
    return subprocess.run(
        ["ctr", "--address", str(sock), "--namespace", "k8s.io", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def imported_config(image: str) -> str | None:
    """The config digest (podman's image ID) of `image` in the node's containerd, if there."""
    listed = ctr("images", "ls", f"name=={image}").stdout.splitlines()[1:]
    if not listed:
        return None
    manifest = json.loads(ctr("content", "get", listed[0].split()[2]).stdout)
    config: str = manifest["config"]["digest"]
    return config


def imported(image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`image`, as `make images` built it, imported into the real node's containerd (once per
    build: skipped when containerd holds the same image ID). Pods find it there: its tag is not
    `latest`, so the kubelet's default pull policy is IfNotPresent and nothing is pulled."""
    if shutil.which("podman") is None:
        reason = "podman is not installed: run images/setup.sh and make images"
    elif podman("image", "exists", image, check=False).returncode != 0:
        reason = f"no image {image} in podman's store: run make images"
    else:
        reason = ""
    if reason:
        if containers_required() or os.environ.get("ALIASOP_REQUIRE_REAL_NODE") == "1":
            pytest.fail(f"{reason} (required here)")
        pytest.skip(reason)
    image_id = podman("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    with (cache_dir() / "realnode-import.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers running node modules side by side
        if imported_config(image) != f"sha256:{image_id}":
            _import(image, tmp_path_factory)
        assert imported_config(image) == f"sha256:{image_id}"
    return image


def _import(image: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Save `image` from podman's store and import it into the real node's containerd."""
    archive: Path = tmp_path_factory.mktemp("image") / "image.tar"
    podman("save", "--format", "docker-archive", "-o", str(archive), image)
    subprocess.run(
        [sys.executable, "-m", "aliasop_dev.cluster.realnode", "import", str(archive)],
        check=True,
        capture_output=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    archive.unlink()


@pytest.fixture(scope="session")
def serving_image(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> str:
    return imported(SERVING_IMAGE, tmp_path_factory)


@pytest.fixture(scope="session")
def serving_image_id(serving_image: str) -> str:
    """containerd's ID of the imported serving image: its config's digest (podman's image ID),
    read from the manifest containerd holds under the image's name. The kubelet reports it as a
    container's imageID (the image has no repo digest); `ctr images ls` shows the manifest's."""
    image_id = imported_config(serving_image)
    assert image_id is not None
    return image_id


@pytest.fixture(scope="session")
def operator_image(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> str:
    return imported(OPERATOR_IMAGE, tmp_path_factory)


@pytest.fixture(scope="session")
def node_mlflow(
    real_node: RealNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeMlflow]:
    """A real MLflow server on the node's bridge address, which the pods reach (through their
    default route, the node)."""
    workdir = tmp_path_factory.mktemp("mlflow-on-node")
    port = local.free_port()
    server = local.mlflow_server(workdir, port, host=real_node.address).start()
    uri = f"http://{real_node.address}:{port}"
    try:
        server.wait_ready(f"{uri}/health", timeout=90)
        yield NodeMlflow(uri, workdir / "artifacts")
    finally:
        server.stop()
