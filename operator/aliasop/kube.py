"""Kubernetes I/O for the operator: apply children, write status.

The official client is synchronous, so every call runs in a worker thread, off the event loop.
Children come first: in a burst (a webhook for a model a thousand resources follow) the
Deployments are updated before the status writes that report it, which wait until no apply is
in flight and then go through a smaller lane of threads of their own.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client

from aliasop.models import GROUP, PLURAL, VERSION

FIELD_MANAGER = "aliasop"
_APPLY = "application/apply-patch+yaml"  # JSON is YAML, so a dict body is fine


class Cluster:
    def __init__(
        self, api_client: client.ApiClient, children_threads: int, status_threads: int
    ) -> None:
        self._children_lane = ThreadPoolExecutor(children_threads, "kube-children")
        self._status_lane = ThreadPoolExecutor(status_threads, "kube-status")
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        # (kind, namespace, name) -> (digest of the manifest last applied, the object's
        # generation right after): lets a steady resource skip its applies.
        self._applied: dict[tuple[str, str, str], tuple[str, int | None]] = {}
        # Applies in flight: status writes wait until there are none.
        self._applying = 0
        self._nothing_applying = asyncio.Event()
        self._nothing_applying.set()

    async def apply(self, manifest: dict[str, Any], current_generation: int | None = None) -> None:
        """Server-side apply as field manager `aliasop`: fields others own are left alone.

        Skipped when this manifest was applied last and, for objects with a generation,
        nobody has changed the object's spec since (`current_generation` is unchanged)."""
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        if self._applied.get(key) == (digest, current_generation):
            return
        patch = {
            "Deployment": self._apps.patch_namespaced_deployment,
            "Service": self._core.patch_namespaced_service,
        }[manifest["kind"]]
        self._applying += 1
        self._nothing_applying.clear()
        try:
            applied = await _in(
                self._children_lane,
                patch,
                meta["name"],
                meta["namespace"],
                manifest,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type=_APPLY,
            )
        finally:
            self._applying -= 1
            if not self._applying:
                self._nothing_applying.set()
        self._applied[key] = (digest, applied.get("metadata", {}).get("generation"))

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is remembered of the children of a resource no longer followed."""
        for kind in ("Deployment", "Service"):
            self._applied.pop((kind, namespace, name), None)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource, once no apply is in flight; None values
        remove fields."""
        await self._nothing_applying.wait()
        await _in(
            self._status_lane,
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
        )


async def _in(
    lane: ThreadPoolExecutor, method: Callable[..., Any], *args: Any, **kwargs: Any
) -> dict[str, Any]:
    return await asyncio.get_running_loop().run_in_executor(
        lane, functools.partial(_call, method, *args, **kwargs)
    )


def _call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a client method and return the response body as a plain dict, skipping the
    client's slow model deserialisation. The body is read in full and the connection handed
    back to the pool: an unread response keeps its connection, so the next call would open
    (and TLS-handshake) a new one."""
    response = method(*args, _preload_content=False, **kwargs)
    try:
        body: dict[str, Any] = json.loads(response.data)
    finally:
        response.release_conn()
    return body
