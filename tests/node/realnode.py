"""What the real-node tests share: the node's names, the smoke image, the pod settings that
take a pod there, small waits on pods, the MLflow server pods reach, and a model server's
predictions."""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

REAL_NODE = "aliasop-real-0"
REAL_NODE_LABEL = "aliasop.io/real-node"  # also the taint's key (value "true", NoSchedule)
# Built by aliasop_dev.cluster.realnode from Debian's busybox-static and imported into the node's
# containerd: sh, httpd, nc, id, touch, cat, sleep.
SMOKE_IMAGE = "localhost/aliasop/smoke:1"
# No direct opener would honour a proxy set in the environment: these addresses are local.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class RealNode:
    name: str
    address: str  # the node's InternalIP: its bridge, where the kubelet listens
    pod_network: ipaddress.IPv4Network


@dataclass(frozen=True)
class NodeMlflow:
    """A real MLflow server that pods on the node reach, and the directory of the artifacts it
    serves."""

    uri: str
    artifacts: Path


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


def predict(
    url: str, example: Any, params: dict[str, Any] | None = None, timeout: float = 10
) -> list[float]:
    """POST `example` (a DataFrame), and MLflow `params` if any, to a model server's
    /invocations `url`; its predictions."""
    body: dict[str, Any] = {
        "dataframe_split": json.loads(example.to_json(orient="split", index=False))
    }
    if params:
        body["params"] = params
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # A new connection each time: each request is routed by kube-proxy's rules of the moment.
    with HTTP.open(request, timeout=timeout) as response:
        predictions: list[float] = json.loads(response.read())["predictions"]
    return predictions
