"""MLflow Model Registry access: alias -> version, over MLflow's REST API.

The REST API is used directly (not the MLflow client) so every call is async, has a short
timeout and is never retried behind our back: the operator decides when to try again.
Concurrent identical lookups share one request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from aliasop.metrics import REGISTRY_REQUESTS
from aliasop.models import ModelUri, Reason, RegistryProblem, ResolvedVersion

_READY = "READY"
_RUN_ID_CACHE_SIZE = 10_000


class MlflowRegistry:
    def __init__(self, timeout_seconds: float, concurrency: int) -> None:
        self._http = httpx.AsyncClient(timeout=timeout_seconds)
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[tuple[Any, ...], asyncio.Future[dict[str, Any] | None]] = {}
        # READY is final for a version, so its run id never needs asking again. A deleted
        # version drops its aliases, which the (uncached) alias lookup sees.
        self._ready_run_ids: dict[tuple[str, str, str], str] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def resolve(self, tracking_uri: str, uri: ModelUri) -> ResolvedVersion:
        """Resolve with a fresh look at the model's aliases."""
        return await self.resolve_from(
            tracking_uri, uri, await self.aliases(tracking_uri, uri.name)
        )

    async def aliases(self, tracking_uri: str, model: str) -> dict[str, str]:
        """Every alias of `model` -> its version."""
        body = await self._get(tracking_uri, "registered-models/get", {"name": model})
        if body is None:
            raise RegistryProblem(
                Reason.MODEL_NOT_FOUND, f"registered model {model!r} does not exist"
            )
        aliases = body.get("registered_model", {}).get("aliases", [])
        return {a["alias"]: str(a["version"]) for a in aliases}

    async def resolve_from(
        self, tracking_uri: str, uri: ModelUri, aliases: dict[str, str]
    ) -> ResolvedVersion:
        """Resolve `uri` given its model's alias map: checks the version is READY."""
        version = aliases.get(uri.alias)
        if version is None:
            known = ", ".join(sorted(aliases)) or "none"
            raise RegistryProblem(
                Reason.ALIAS_NOT_FOUND,
                f"model {uri.name!r} has no alias {uri.alias!r} (aliases: {known})",
            )
        cached = self._ready_run_ids.get((tracking_uri, uri.name, version))
        if cached is not None:
            return ResolvedVersion(version=version, run_id=cached)
        body = await self._get(
            tracking_uri, "model-versions/get", {"name": uri.name, "version": version}
        )
        if body is None:
            raise RegistryProblem(
                Reason.VERSION_NOT_FOUND,
                f"alias {uri.alias!r} points at version {version} of {uri.name!r}, "
                "which does not exist",
            )
        model_version = body.get("model_version", {})
        status = model_version.get("status", _READY)
        if status != _READY:
            raise RegistryProblem(
                Reason.VERSION_NOT_READY,
                f"version {version} of {uri.name!r} is {status}, not READY",
            )
        run_id = model_version.get("run_id") or ""
        if len(self._ready_run_ids) >= _RUN_ID_CACHE_SIZE:
            self._ready_run_ids.clear()
        self._ready_run_ids[(tracking_uri, uri.name, version)] = run_id
        return ResolvedVersion(version=version, run_id=run_id)

    async def _get(
        self, tracking_uri: str, endpoint: str, params: dict[str, str]
    ) -> dict[str, Any] | None:
        """GET an MLflow REST endpoint; None when MLflow says the object does not exist.

        Concurrent identical GETs share one request (a webhook wakes every follower of a
        model at once, and they all look up the same new version). The request is a task of
        its own, so one caller being cancelled does not cancel it for the others."""
        key = (tracking_uri, endpoint, *sorted(params.items()))
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._request(tracking_uri, endpoint, params))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(task)

    async def _request(
        self, tracking_uri: str, endpoint: str, params: dict[str, str]
    ) -> dict[str, Any] | None:
        url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/{endpoint}"
        try:
            async with self._slots:
                response = await self._http.get(url, params=params)
        except httpx.HTTPError as exc:
            REGISTRY_REQUESTS.labels(endpoint=endpoint, result="unreachable").inc()
            raise RegistryProblem(
                Reason.REGISTRY_UNAVAILABLE,
                f"MLflow at {tracking_uri} did not answer: {type(exc).__name__} {exc}".strip(),
            ) from None
        REGISTRY_REQUESTS.labels(endpoint=endpoint, result=str(response.status_code)).inc()
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        error_code = _error_code(response)
        if response.status_code == 404 or error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        if response.status_code == 403:
            hint = " (MLflow 3 refuses unknown Host headers: start it with --allowed-hosts)"
        else:
            hint = ""
        raise RegistryProblem(
            Reason.REGISTRY_UNAVAILABLE,
            f"MLflow at {tracking_uri} answered HTTP {response.status_code} "
            f"{error_code or ''}{hint}".rstrip(),
        )


def _error_code(response: httpx.Response) -> str | None:
    try:
        code = response.json().get("error_code")
    except ValueError:
        return None
    return code if isinstance(code, str) else None
