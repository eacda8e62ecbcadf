"""The real-node tier: pods that really run on the test cluster's kubelet node
(tests/cluster/realnode.sh), not on the kwok one.

The node is tainted, so each pod here tolerates the taint and selects the node's label
(realnode.on_real_node). Without the node (a machine that cannot run containerd, say) these tests
skip, naming the reason cluster.sh recorded; under ALIASOP_REQUIRE_REAL_NODE=1 (CI) they fail.
"""

from __future__ import annotations

import ipaddress
import os

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from realnode import REAL_NODE, RealNode
from support import Cluster, cache_dir


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
        message = f"the test cluster has no real node: {why} (tests/cluster/realnode.sh)"
        if os.environ.get("ALIASOP_REQUIRE_REAL_NODE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    return RealNode(
        name=REAL_NODE,
        address=address,
        pod_network=ipaddress.ip_interface(f"{address}/24").network,
    )
