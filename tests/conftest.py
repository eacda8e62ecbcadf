"""Shared fixtures. Tests under tests/integration are marked `integration`, those under
tests/node `real_node`, automatically."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from aliasop_dev import bikes, chart, local

from support import REPO, TEST_NAMESPACE_PREFIX, Cluster, cluster_script

INTEGRATION_DIR = Path(__file__).parent / "integration"
REAL_NODE_DIR = Path(__file__).parent / "node"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
        if REAL_NODE_DIR in item.path.parents:
            item.add_marker(pytest.mark.real_node)


# --- Kubernetes test cluster (python -m aliasop_dev.cluster) ----------------------------------


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The kwok test cluster: reuses a healthy running one, else starts it and stops it after."""
    started_here = cluster_script("status", check=False).returncode != 0
    if started_here:
        cluster_script("up")
    try:
        yield Cluster.from_cache()
    finally:
        if started_here:
            cluster_script("down")


@pytest.fixture(scope="session")
def k8s(cluster: Cluster) -> client.ApiClient:
    """A Kubernetes API client with the cluster's admin credentials."""
    return config.new_client_from_config(config_file=cluster.kubeconfig)


@pytest.fixture
def namespace(k8s: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) when the test ends."""
    prefix = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"{TEST_NAMESPACE_PREFIX}{prefix}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(k8s)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def installed(cluster: Cluster) -> Cluster:
    """The CRD and manifests/ applied the way a user installs them."""
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.aliasop.io")
    # An operator Deployment from an earlier manifests/ with another (immutable) selector is
    # replaced, as the upgrade notes tell users to.
    live = cluster.kubectl(
        "get", "deployment", chart.RELEASE, "-n", chart.NAMESPACE, "-o", "json", check=False
    )
    if live.returncode == 0 and chart.selector_changed(json.loads(live.stdout)):
        cluster.kubectl("delete", "deployment", chart.RELEASE, "-n", chart.NAMESPACE, "--wait")
    cluster.kubectl("apply", "-k", str(REPO / "manifests"))
    return cluster


# --- MLflow and models --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server on loopback (containers on the host network reach it too)."""
    port = local.free_port()
    server = local.mlflow_server(tmp_path_factory.mktemp("mlflow"), port).start()
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/health", timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def model_name() -> str:
    return f"bikes-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def two_versions(
    mlflow_uri: str, model_name: str
) -> tuple[bikes.RegisteredVersion, bikes.RegisteredVersion]:
    """Versions 1 (ridge) and 2 (hourly) of a fresh model, which predict differently;
    `@champion` points at version 1."""
    v1 = bikes.train_and_register(mlflow_uri, model_name, kind="linear")
    v2 = bikes.train_and_register(mlflow_uri, model_name, kind="hourly")
    assert v1.predictions != v2.predictions
    bikes.set_alias(mlflow_uri, model_name, "champion", v1.version)
    return v1, v2
