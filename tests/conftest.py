"""Shared fixtures. Tests under tests/integration are marked `integration`, those under
tests/node `real_node`, automatically."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from support import TEST_NAMESPACE_PREFIX, Cluster, cluster_script

INTEGRATION_DIR = Path(__file__).parent / "integration"
REAL_NODE_DIR = Path(__file__).parent / "node"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
        if REAL_NODE_DIR in item.path.parents:
            item.add_marker(pytest.mark.real_node)


# --- Kubernetes test cluster (tests/cluster/cluster.sh) ---------------------------------------


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
