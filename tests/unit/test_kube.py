"""kube.Cluster's ordering of writes, with the client's HTTP methods stubbed (no I/O)."""

import asyncio
import json
import threading
from typing import Any

from kubernetes import client

from aliasop.kube import Cluster


class Response:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"replicas": 1},
    }


async def test_status_writes_wait_until_no_apply_is_in_flight() -> None:
    cluster = Cluster(client.ApiClient(), children_threads=2, status_threads=1)
    release_apply = threading.Event()
    writes: list[str] = []

    def patch_deployment(name: str, *_: Any, **__: Any) -> Response:
        release_apply.wait(timeout=10)
        writes.append(f"deployment {name}")
        return Response({"metadata": {"generation": 2}})

    def patch_status(*args: Any, **_: Any) -> Response:
        writes.append(f"status {args[4]}")
        return Response({})

    cluster._apps.patch_namespaced_deployment = patch_deployment  # type: ignore[method-assign]
    cluster._custom.patch_namespaced_custom_object_status = patch_status  # type: ignore[method-assign]

    apply = asyncio.create_task(cluster.apply(deployment("a")))
    await asyncio.sleep(0)  # the apply is in flight
    status = asyncio.create_task(cluster.patch_status("ns", "b", {"phase": "Ready"}))
    done, _ = await asyncio.wait({status}, timeout=0.2)
    assert not done and writes == []  # held back while the apply runs

    release_apply.set()
    await asyncio.wait_for(asyncio.gather(apply, status), timeout=10)
    assert writes == ["deployment a", "status b"]


async def test_status_writes_go_at_once_when_nothing_is_applied() -> None:
    cluster = Cluster(client.ApiClient(), children_threads=1, status_threads=1)
    writes: list[str] = []

    def patch_status(*args: Any, **_: Any) -> Response:
        writes.append(f"status {args[4]}")
        return Response({})

    cluster._custom.patch_namespaced_custom_object_status = patch_status  # type: ignore[method-assign]
    await asyncio.wait_for(cluster.patch_status("ns", "b", {"phase": "Ready"}), timeout=10)
    assert writes == ["status b"]
