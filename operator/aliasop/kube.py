"""Kubernetes I/O for the operator: read the child Deployment, apply children, write status.

The official client is synchronous, so every call runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
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

    async def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Deployment as the API server sends it (camelCase), or None if there is none."""
        try:
            response: Any = await asyncio.to_thread(
                self._apps.read_namespaced_deployment, name, namespace, _preload_content=False
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        body: dict[str, Any] = json.loads(response.data)  # raw urllib3 response
        return body

    async def apply(self, manifest: dict[str, Any]) -> None:
        """Server-side apply as field manager `aliasop`: fields others own are left alone."""
        meta = manifest["metadata"]
        patch = {
            "Deployment": self._apps.patch_namespaced_deployment,
            "Service": self._core.patch_namespaced_service,
        }[manifest["kind"]]
        await asyncio.to_thread(
            patch,
            meta["name"],
            meta["namespace"],
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=_APPLY,
            _preload_content=False,
        )

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
