"""Kubernetes I/O for the operator: apply children, write status.

The official client is synchronous, so every call runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from kubernetes import client

from aliasop.models import GROUP, PLURAL, VERSION

FIELD_MANAGER = "aliasop"
_APPLY = "application/apply-patch+yaml"  # JSON is YAML, so a dict body is fine


class Cluster:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        # (kind, namespace, name) -> (digest of the manifest last applied, the object's
        # generation right after): lets a steady resource skip its applies.
        self._applied: dict[tuple[str, str, str], tuple[str, int | None]] = {}

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
        response: Any = await asyncio.to_thread(
            patch,
            meta["name"],
            meta["namespace"],
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=_APPLY,
            _preload_content=False,
        )
        generation = json.loads(response.data).get("metadata", {}).get("generation")
        self._applied[key] = (digest, generation)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is remembered of the children of a resource no longer followed."""
        for kind in ("Deployment", "Service"):
            self._applied.pop((kind, namespace, name), None)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource; None values remove fields."""
        await asyncio.to_thread(
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _preload_content=False,
        )
