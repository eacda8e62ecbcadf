"""What the real-node tests share: the node's names, the smoke image, the pod settings that
take a pod there, and small waits on pods."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from kubernetes import client

REAL_NODE = "aliasop-real-0"
REAL_NODE_LABEL = "aliasop.io/real-node"  # also the taint's key (value "true", NoSchedule)
# Built by tests/cluster/realnode.sh from Debian's busybox-static and imported into the node's
# containerd: sh, httpd, nc, id, touch, cat, sleep.
SMOKE_IMAGE = "localhost/aliasop/smoke:1"


@dataclass(frozen=True)
class RealNode:
    name: str
    address: str  # the node's InternalIP: its bridge, where the kubelet listens
    pod_network: ipaddress.IPv4Network


def on_real_node(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """`pod_spec` with what takes a pod to the real node: its label selected, its taint
    tolerated."""
    return {
        **pod_spec,
        "nodeSelector": {REAL_NODE_LABEL: "true"},
        "tolerations": [
            {"key": REAL_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ],
    }


def condition(pod: client.V1Pod, kind: str) -> bool:
    """Whether the pod's condition `kind` (Ready, ContainersReady...) is True."""
    return any(c.type == kind and c.status == "True" for c in pod.status.conditions or [])
