"""MLflow Model Registry access: alias -> version, over MLflow's REST API.

The REST API is used directly (not the MLflow client) so every call is async, has a short
timeout and is never retried behind our back: the operator decides when to try again.
Concurrent identical lookups share one request.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml

from aliasop.metrics import REGISTRY_REQUESTS
from aliasop.models import ModelUri, Reason, RegistryProblem, ResolvedVersion
from aliasop.settings import RegistryAccess, RegistryWriter
from aliasop.signatures import SignatureInputs, Unreadable

_READY = "READY"
INVALID_HOST = "Invalid Host header"  # the start of MLflow 3's refusal of an unknown Host
_VERSIONS_REMEMBERED = 10_000  # per cache: the run ids of READY versions, their signatures


class MlflowRegistry:
    def __init__(
        self,
        timeout_seconds: float,
        concurrency: int,
        access: RegistryAccess | None = None,
        credential_origins: Collection[str] = (),
        writer: RegistryWriter | None = None,
    ) -> None:
        """`access`: credentials and TLS, sent to the servers in `credential_origins` only
        (scheme://host:port): a spec naming another tracking server must not receive them.
        `writer`: the credentials of writes (tags, aliases), to the same servers."""
        access = access if access is not None else RegistryAccess()
        self._http = httpx.AsyncClient(timeout=timeout_seconds, verify=_tls(access))
        self._credentials = access.headers()
        self._writer_credentials = writer.headers() if writer is not None else {}
        self._credential_origins = {origin_of(uri) for uri in credential_origins}
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[tuple[Any, ...], asyncio.Future[dict[str, Any] | None]] = {}
        # READY is final for a version, so its run id never needs asking again. A deleted
        # version drops its aliases, which the (uncached) alias lookup sees.
        self._ready_run_ids: dict[tuple[str, str, str], str] = {}
        # A version's files never change either: its signature inputs (or the one request for
        # them under way) per (tracking URI, model, version). Failures are not kept.
        self._signature_inputs: dict[tuple[str, str, str], asyncio.Future[SignatureInputs]] = {}
        # Raises NotLeading unless this replica may write (leader.LeaderElector.fence);
        # None: it always may.
        self.fence: Callable[[], None] | None = None

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
        model_version = await self._model_version(
            tracking_uri,
            uri.name,
            version,
            f"alias {uri.alias!r} points at version {version} of {uri.name!r}, "
            "which does not exist",
        )
        status = model_version.get("status", _READY)
        if status != _READY:
            raise RegistryProblem(
                Reason.VERSION_NOT_READY,
                f"version {version} of {uri.name!r} is {status}, not READY",
            )
        run_id = model_version.get("run_id") or ""
        if len(self._ready_run_ids) >= _VERSIONS_REMEMBERED:
            self._ready_run_ids.clear()
        self._ready_run_ids[(tracking_uri, uri.name, version)] = run_id
        return ResolvedVersion(version=version, run_id=run_id)

    async def version_tags(self, tracking_uri: str, name: str, version: str) -> dict[str, str]:
        """The tags of one model version, as they are now (tags change: never cached)."""
        missing = f"version {version} of {name!r} does not exist"
        model_version = await self._model_version(tracking_uri, name, version, missing)
        tags = model_version.get("tags") or []
        return {tag["key"]: str(tag.get("value", "")) for tag in tags}

    async def _model_version(
        self, tracking_uri: str, name: str, version: str, missing: str
    ) -> dict[str, Any]:
        """MLflow's model_version object; VERSION_NOT_FOUND saying `missing` when it is gone."""
        body = await self._get(
            tracking_uri, "model-versions/get", {"name": name, "version": version}
        )
        if body is None:
            raise RegistryProblem(Reason.VERSION_NOT_FOUND, missing)
        return dict(body.get("model_version", {}))

    async def signature_inputs(self, tracking_uri: str, name: str, version: str) -> SignatureInputs:
        """`signature.inputs` of a version's MLmodel (a JSON string); None when it has no
        signature; Unreadable when the server does not serve the version's files (they are
        not in storage MLflow proxies) or they lack an MLmodel. Asked once per version, and
        concurrent callers share the requests."""
        key = (tracking_uri, name, version)
        task = self._signature_inputs.get(key)
        if task is None:
            if len(self._signature_inputs) >= _VERSIONS_REMEMBERED:
                self._signature_inputs.clear()
            task = asyncio.ensure_future(self._read_signature_inputs(tracking_uri, name, version))
            self._signature_inputs[key] = task
            task.add_done_callback(functools.partial(self._forget_failure, key))
        return await asyncio.shield(task)

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

    async def set_version_tag(
        self, tracking_uri: str, name: str, version: str, key: str, value: str
    ) -> None:
        await self._write("POST", tracking_uri, "model-versions/set-tag", name, version, key, value)

    async def delete_version_tag(
        self, tracking_uri: str, name: str, version: str, key: str
    ) -> None:
        """Delete a tag; one that is not there is fine."""
        await self._write("DELETE", tracking_uri, "model-versions/delete-tag", name, version, key)

    async def set_alias(self, tracking_uri: str, name: str, alias: str, version: str) -> None:
        body = {"name": name, "alias": alias, "version": version}
        url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias"
        await self._send(
            "POST", url, tracking_uri, "registered-models/alias", name, body=body, writing=True
        )

    async def alias_version(self, tracking_uri: str, name: str, alias: str) -> str | None:
        """Where `alias` of `name` points now, asked afresh (not shared with a lookup under
        way: a revert compares it right before writing); None when there is no such alias.
        (The model's alias map, as MLflow answers a missing alias with a 400, not a 404.)"""
        body = await self._request(tracking_uri, "registered-models/get", {"name": name})
        aliases = (body or {}).get("registered_model", {}).get("aliases", [])
        return next((str(a["version"]) for a in aliases if a.get("alias") == alias), None)

    async def _write(
        self,
        method: str,
        tracking_uri: str,
        endpoint: str,
        name: str,
        version: str,
        key: str,
        value: str | None = None,
    ) -> None:
        body = {"name": name, "version": version, "key": key}
        if value is not None:
            body["value"] = value
        url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/{endpoint}"
        await self._send(method, url, tracking_uri, endpoint, name, body=body, writing=True)

    async def _request(
        self, tracking_uri: str, endpoint: str, params: dict[str, str]
    ) -> dict[str, Any] | None:
        url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/{endpoint}"
        response = await self._send(
            "GET", url, tracking_uri, endpoint, params.get("name", ""), params=params
        )
        if response is None:
            return None
        body: dict[str, Any] = response.json()
        return body

    async def _send(
        self,
        method: str,
        url: str,
        server: str,
        endpoint: str,
        model: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, str] | None = None,
        writing: bool = False,
    ) -> httpx.Response | None:
        """Send one request to MLflow at `server`; the response when it succeeded, None when
        MLflow says the object does not exist. Credentials go to trusted servers only: the
        writer's when `writing`. Other answers raise RegistryProblem, saying what they mean."""
        trusted = origin_of(url) in self._credential_origins
        credentials = self._writer_credentials if writing else self._credentials
        try:
            async with self._slots:
                if writing and self.fence is not None:
                    self.fence()
                response = await self._http.request(
                    method,
                    url,
                    params=params,
                    json=body,
                    headers=credentials if trusted else None,
                )
        except httpx.HTTPError as exc:
            REGISTRY_REQUESTS.labels(endpoint=endpoint, result="unreachable").inc()
            raise RegistryProblem(
                Reason.REGISTRY_UNAVAILABLE,
                f"MLflow at {server} did not answer: {type(exc).__name__} {exc}".strip(),
            ) from None
        REGISTRY_REQUESTS.labels(endpoint=endpoint, result=str(response.status_code)).inc()
        if response.status_code == 200:
            return response
        error_code = _error_code(response)
        if response.status_code == 404 or error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        if response.status_code in (401, 403):
            raise RegistryProblem(
                Reason.REGISTRY_ACCESS_DENIED,
                _access_denied(server, response, trusted, model, writing),
            )
        raise RegistryProblem(
            Reason.REGISTRY_UNAVAILABLE,
            f"MLflow at {server} answered HTTP {response.status_code} {error_code or ''}".rstrip(),
        )

    async def _read_signature_inputs(
        self, tracking_uri: str, name: str, version: str
    ) -> SignatureInputs:
        body = await self._get(
            tracking_uri, "model-versions/get-download-uri", {"name": name, "version": version}
        )
        if body is None:
            raise RegistryProblem(
                Reason.VERSION_NOT_FOUND, f"version {version} of {name!r} does not exist"
            )
        location = str(body.get("artifact_uri", ""))
        url = _proxied_artifact_url(tracking_uri, location, "MLmodel")
        if url is None:
            scheme = urlsplit(location).scheme
            where = f"in {scheme}: storage" if scheme else "on a path"
            return Unreadable(
                f"keeps its files {where}, which MLflow does not serve to aliasop "
                f"(it reads {_PROXIED}: locations only)"
            )
        mlmodel = await self._get_text(url, name)
        if mlmodel is None:
            return Unreadable(f"has no MLmodel file in {location}")
        return _inputs_of(mlmodel)

    async def _get_text(self, url: str, model: str) -> str | None:
        """GET a file MLflow serves (text, not JSON); None when it is not there."""
        server = url.partition(_ARTIFACTS_ROUTE)[0]
        response = await self._send("GET", url, server, _ARTIFACTS_ENDPOINT, model)
        return response.text if response is not None else None

    def _forget_failure(
        self, key: tuple[str, str, str], task: asyncio.Future[SignatureInputs]
    ) -> None:
        """Drop a failed lookup, so the next call asks again."""
        failed = task.cancelled() or task.exception() is not None
        if failed and self._signature_inputs.get(key) is task:
            del self._signature_inputs[key]


def _tls(access: RegistryAccess) -> ssl.SSLContext | bool:
    """How MLflow's certificate is checked: against the given CA bundle, else the system's;
    not at all when asked. With a client certificate for mutual TLS."""
    if access.insecure_tls:
        return False
    context = ssl.create_default_context(cafile=access.server_cert_path or None)
    if access.client_cert_path:
        context.load_cert_chain(access.client_cert_path)
    return context


def origin_of(uri: str) -> str:
    """scheme://host:port of a URL, the port spelled out."""
    url = httpx.URL(uri)
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    return f"{url.scheme}://{url.host}:{port}"


def _access_denied(
    tracking_uri: str, response: httpx.Response, trusted: bool, model: str, writing: bool = False
) -> str:
    """What a 401 or 403 from MLflow means, and what to do about it."""
    said = f"MLflow at {tracking_uri} answered HTTP {response.status_code}"
    if writing and trusted and response.status_code == 401:
        return (
            f"{said}: it refused the operator's writer credentials (ALIASOP_REGISTRY_WRITER_*"
            ", in the Secret aliasop-mlflow-writer)"
        )
    if writing and trusted and INVALID_HOST not in response.text:
        return f"{said}: the operator's MLflow writer may not edit model {model!r} (needs EDIT)"
    if response.status_code == 401:
        if not trusted:
            return (
                f"{said}: it wants credentials, and the operator sends its MLFLOW_TRACKING_* "
                "credentials only to ALIASOP_REGISTRY_CREDENTIAL_ORIGINS"
            )
        return (
            f"{said}: it refused the operator's credentials (MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN, in the Secret aliasop-mlflow)"
        )
    if INVALID_HOST in response.text:
        return (
            f"{said}: it does not know the Host header {response.request.url.netloc.decode()!r}"
            " (MLflow 3 refuses unknown Host headers: start it with --allowed-hosts)"
        )
    return f"{said}: the operator's MLflow user may not read model {model!r} (it needs READ)"


def _error_code(response: httpx.Response) -> str | None:
    try:
        code = response.json().get("error_code")
    except ValueError:
        return None
    return code if isinstance(code, str) else None


_PROXIED = "mlflow-artifacts"  # artifacts the tracking server serves itself
_ARTIFACTS_ROUTE = "/api/2.0/mlflow-artifacts/artifacts/"
_ARTIFACTS_ENDPOINT = "mlflow-artifacts/artifacts"  # the metrics label


def _proxied_artifact_url(tracking_uri: str, location: str, file: str) -> str | None:
    """Where MLflow serves `file` of an mlflow-artifacts: location, as MLflow's own client
    finds it (MlflowArtifactsRepository.resolve_uri: the tracking URI's scheme and path, the
    location's host if it names one); None for any other location."""
    artifacts = urlsplit(location)
    if artifacts.scheme != _PROXIED:
        return None
    tracking = urlsplit(tracking_uri)
    path = re.sub("/+", "/", f"{tracking.path}/{_ARTIFACTS_ROUTE}/{artifacts.path}/{file}")
    return urlunsplit((tracking.scheme, artifacts.netloc or tracking.netloc, path, "", ""))


def _inputs_of(mlmodel: str) -> SignatureInputs:
    """`signature.inputs` of an MLmodel file; None when it has no signature (or no inputs)."""
    try:
        document = yaml.safe_load(mlmodel)
    except yaml.YAMLError:
        return Unreadable("has an MLmodel file that is not YAML")
    signature = document.get("signature") if isinstance(document, dict) else None
    inputs = signature.get("inputs") if isinstance(signature, dict) else None
    if inputs is None or isinstance(inputs, str):
        return inputs
    return Unreadable("has signature inputs that are not a JSON string")
