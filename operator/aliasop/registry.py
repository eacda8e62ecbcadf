"""MLflow Model Registry access: alias -> version, over MLflow's REST API.

The REST API is used directly (not the MLflow client) so every call is async and never
retried behind our back: the operator decides when to try again. Concurrent identical lookups
share one request.

A ModelDeployment may name any server (`spec.trackingUri`), so every exchange is bounded: a
deadline for the whole of it (connecting, sending, reading the answer), a cap on the answer's
size, and a bounded wait for one of a limited number of slots (see `_Slots`). An answer that is
not what MLflow's API returns is a RegistryProblem saying in a few fixed words what came back,
never the answer itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import posixpath
import re
import ssl
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import yaml
from pydantic import BaseModel, Field, StringConstraints, ValidationError

from aliasop.metrics import REGISTRY_REQUESTS
from aliasop.models import ALIAS_PATTERN, ModelUri, Reason, RegistryProblem, ResolvedVersion
from aliasop.settings import REGISTRY_MAX_RESPONSE_BYTES, RegistryAccess, RegistryWriter
from aliasop.signatures import SignatureInputs, Unreadable

_READY: Final = "READY"
INVALID_HOST = "Invalid Host header"  # the start of MLflow 3's refusal of an unknown Host
_VERSIONS_REMEMBERED = 10_000  # per cache: the run ids of READY versions, their signatures
_S = TypeVar("_S", bound="_Shape")


class MlflowRegistry:
    def __init__(
        self,
        timeout_seconds: float,
        concurrency: int,
        access: RegistryAccess | None = None,
        credential_origins: Collection[str] = (),
        writer: RegistryWriter | None = None,
        *,
        own_servers: Collection[str] = (),
        origin_concurrency: int | None = None,
        slot_wait_seconds: float | None = None,
        max_response_bytes: int = REGISTRY_MAX_RESPONSE_BYTES,
    ) -> None:
        """`timeout_seconds`: the deadline of one exchange, answer included. `concurrency`,
        `origin_concurrency`, `slot_wait_seconds`: see `_Slots` (defaults: a quarter of
        `concurrency`, and the deadline); `own_servers` (the operator's tracking URI) and
        `credential_origins` have slots of their own. `max_response_bytes`: longer answers
        are refused.
        `access`: credentials and TLS, sent only to URLs under `credential_origins` (tracking
        URIs, their paths included): a spec naming another tracking server, or another app
        on the same host, must not receive them. `writer`: the credentials of writes (tags,
        aliases), to the same URLs."""
        access = access if access is not None else RegistryAccess()
        # Compressed answers are not asked for: a small one can inflate past any cap.
        self._http = httpx.AsyncClient(
            timeout=timeout_seconds, verify=_tls(access), headers={"Accept-Encoding": "identity"}
        )
        self._deadline = timeout_seconds
        self._max_response_bytes = max_response_bytes
        self._credentials = access.headers()
        self._writer_credentials = writer.headers() if writer is not None else {}
        self._trusted = [_Location.of(httpx.URL(uri)) for uri in credential_origins]
        self._own = [*self._trusted, *(_Location.of(httpx.URL(uri)) for uri in own_servers)]
        self._slots = _Slots(
            concurrency,
            origin_concurrency if origin_concurrency is not None else max(1, concurrency // 4),
            slot_wait_seconds if slot_wait_seconds is not None else timeout_seconds,
        )
        self._in_flight: dict[tuple[Any, ...], asyncio.Future[Any]] = {}
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
        answer = await self._get(
            tracking_uri, "registered-models/get", {"name": model}, _RegisteredModelAnswer
        )
        if answer is None:
            raise RegistryProblem(
                Reason.MODEL_NOT_FOUND, f"registered model {model!r} does not exist"
            )
        return {a.alias: str(a.version) for a in answer.registered_model.aliases}

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
        status = model_version.status
        if status != _READY:
            raise RegistryProblem(
                Reason.VERSION_NOT_READY,
                f"version {version} of {uri.name!r} is {status}, not READY",
            )
        run_id = model_version.run_id or ""
        if len(self._ready_run_ids) >= _VERSIONS_REMEMBERED:
            self._ready_run_ids.clear()
        self._ready_run_ids[(tracking_uri, uri.name, version)] = run_id
        return ResolvedVersion(version=version, run_id=run_id)

    async def version_tags(self, tracking_uri: str, name: str, version: str) -> dict[str, str]:
        """The tags of one model version, as they are now (tags change: never cached)."""
        missing = f"version {version} of {name!r} does not exist"
        model_version = await self._model_version(tracking_uri, name, version, missing)
        return {tag.key: tag.value for tag in model_version.tags}

    async def _model_version(
        self, tracking_uri: str, name: str, version: str, missing: str
    ) -> _ModelVersion:
        """MLflow's model_version object; VERSION_NOT_FOUND saying `missing` when it is gone."""
        answer = await self._get(
            tracking_uri,
            "model-versions/get",
            {"name": name, "version": version},
            _ModelVersionAnswer,
        )
        if answer is None:
            raise RegistryProblem(Reason.VERSION_NOT_FOUND, missing)
        return answer.model_version

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
        self, tracking_uri: str, endpoint: str, params: dict[str, str], shape: type[_S]
    ) -> _S | None:
        """GET an MLflow REST endpoint, whose answer has `shape`; None when MLflow says the
        object does not exist.

        Concurrent identical GETs share one request (a webhook wakes every follower of a
        model at once, and they all look up the same new version). The request is a task of
        its own, so one caller being cancelled does not cancel it for the others."""
        key = (tracking_uri, endpoint, *sorted(params.items()))
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._request(tracking_uri, endpoint, params, shape))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        answer: _S | None = await asyncio.shield(task)
        return answer

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
        answer = await self._request(
            tracking_uri, "registered-models/get", {"name": name}, _RegisteredModelAnswer
        )
        if answer is None:
            return None
        aliases = answer.registered_model.aliases
        return next((str(a.version) for a in aliases if a.alias == alias), None)

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
        self, tracking_uri: str, endpoint: str, params: dict[str, str], shape: type[_S]
    ) -> _S | None:
        url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/{endpoint}"
        answer = await self._send(
            "GET", url, tracking_uri, endpoint, params.get("name", ""), params=params
        )
        if answer is None:
            return None
        try:
            return shape.model_validate_json(answer.body)
        except ValidationError:
            REGISTRY_REQUESTS.labels(endpoint=endpoint, result="unexpected").inc()
            raise RegistryProblem(
                Reason.REGISTRY_UNAVAILABLE,
                f"MLflow at {tracking_uri} answered HTTP 200 with {answer.description()}",
            ) from None

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
    ) -> _Answer | None:
        """Exchange one request with MLflow at `server`; its answer when it succeeded, None
        when MLflow says the object does not exist. Credentials go only to URLs under a
        trusted tracking URI: the writer's when `writing`. Other answers, and exchanges that
        fail, raise RegistryProblem, saying what they mean."""
        try:
            target = httpx.URL(url, params=params)
            location = _Location.of(target)
            trusted = location.under_any(self._trusted)
            own = location.under_any(self._own)
            credentials = self._writer_credentials if writing else self._credentials
            pool = str(own) if own is not None else str(_Location.of(target, path=False))
            async with self._slots.hold(pool, own=own is not None):
                if writing and self.fence is not None:
                    self.fence()
                async with asyncio.timeout(self._deadline):
                    answer = await self._exchange(
                        method, target, body, credentials if trusted is not None else None
                    )
        except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, _Refused) as exc:
            kind, what = _failure(exc, self._deadline)
            REGISTRY_REQUESTS.labels(endpoint=endpoint, result=kind).inc()
            raise RegistryProblem(
                Reason.REGISTRY_UNAVAILABLE, f"MLflow at {server} {what}"
            ) from None
        REGISTRY_REQUESTS.labels(endpoint=endpoint, result=str(answer.status)).inc()
        if answer.status == 200:
            return answer
        error_code = answer.error_code()
        if answer.status == 404 or error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        if answer.status in (401, 403):
            raise RegistryProblem(
                Reason.REGISTRY_ACCESS_DENIED,
                _access_denied(server, target, answer, trusted is not None, model, writing),
            )
        raise RegistryProblem(
            Reason.REGISTRY_UNAVAILABLE,
            f"MLflow at {server} answered HTTP {answer.status} {error_code or ''}".rstrip(),
        )

    async def _exchange(
        self,
        method: str,
        url: httpx.URL,
        body: dict[str, str] | None,
        credentials: dict[str, str] | None,
    ) -> _Answer:
        """One request and its whole answer, read as it streams in: one longer than the cap
        is refused as soon as it says or shows so."""
        async with self._http.stream(method, url, json=body, headers=credentials) as response:
            if response.headers.get("Content-Encoding", "identity") != "identity":
                raise _Refused("unexpected", "answered with a compressed body it was not asked for")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self._max_response_bytes:
                raise _Refused("too_large", _too_large(self._max_response_bytes))
            received = bytearray()
            async for chunk in response.aiter_raw():
                received += chunk
                if len(received) > self._max_response_bytes:
                    raise _Refused("too_large", _too_large(self._max_response_bytes))
            return _Answer(
                response.status_code, bytes(received), response.headers.get("Content-Type", "")
            )

    async def _read_signature_inputs(
        self, tracking_uri: str, name: str, version: str
    ) -> SignatureInputs:
        answer = await self._get(
            tracking_uri,
            "model-versions/get-download-uri",
            {"name": name, "version": version},
            _DownloadUriAnswer,
        )
        if answer is None:
            raise RegistryProblem(
                Reason.VERSION_NOT_FOUND, f"version {version} of {name!r} does not exist"
            )
        location = answer.artifact_uri
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
        answer = await self._send("GET", url, server, _ARTIFACTS_ENDPOINT, model)
        if answer is None:
            return None
        try:
            return answer.body.decode()
        except UnicodeDecodeError:
            raise RegistryProblem(
                Reason.REGISTRY_UNAVAILABLE,
                f"MLflow at {server} answered HTTP 200 with {answer.description()}",
            ) from None

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


@dataclass(frozen=True)
class _Answer:
    """An answer MLflow gave, read whole (within the cap)."""

    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        """The body as JSON; None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:  # UnicodeDecodeError included
            return None

    def error_code(self) -> str | None:
        """MLflow's `error_code`, if the body is one of MLflow's errors."""
        document = self.json()
        code = document.get("error_code") if isinstance(document, dict) else None
        return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None

    def description(self) -> str:
        """In fixed words, what the body is (never the body: the server chose it)."""
        if not self.body.strip():
            return "an empty body"
        if "html" in self.content_type.lower() or self.body.lstrip()[:1] == b"<":
            return "an HTML page, not MLflow's JSON"
        if self.json() is None:
            return "a body that is not JSON, not MLflow's answer"
        return "JSON that is not what MLflow answers to this request"


_ERROR_CODE = re.compile("[A-Z][A-Z_]{0,63}")  # MLflow's are like RESOURCE_DOES_NOT_EXIST


class _Shape(BaseModel):
    """The part of an MLflow answer aliasop reads; anything else in it is ignored."""


# What the operator shows or applies of an answer is held to the form MLflow gives it: an
# answer is the server's choice, and must not reach status, Events or manifests as it likes.
_Version = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$")] | Annotated[int, Field(ge=0)]


class _Alias(_Shape):
    alias: Annotated[str, StringConstraints(pattern=f"^{ALIAS_PATTERN}$")]
    version: _Version


class _RegisteredModel(_Shape):
    aliases: list[_Alias] = []


class _RegisteredModelAnswer(_Shape):
    registered_model: _RegisteredModel


class _Tag(_Shape):
    key: str
    value: str = ""


class _ModelVersion(_Shape):
    status: Literal["READY", "PENDING_REGISTRATION", "FAILED_REGISTRATION"] = _READY
    run_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{0,64}$")] | None = None
    tags: list[_Tag] = []


class _ModelVersionAnswer(_Shape):
    model_version: _ModelVersion


class _DownloadUriAnswer(_Shape):
    artifact_uri: Annotated[str, StringConstraints(pattern=r"^[!-~]{0,1024}$")] = ""


@dataclass(frozen=True)
class _Location:
    """Where a URL points: its origin (the port spelled out) and its path, as segments with
    dot segments and escapes resolved, the way a server reads them."""

    origin: str
    segments: tuple[str, ...] = ()

    @classmethod
    def of(cls, url: httpx.URL, path: bool = True) -> _Location:
        port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
        origin = f"{url.scheme}://{url.host}:{port}"
        if not path:
            return cls(origin)
        resolved = posixpath.normpath("/" + unquote(url.path))
        return cls(origin, tuple(part for part in resolved.split("/") if part))

    def under_any(self, locations: list[_Location]) -> _Location | None:
        """The first of `locations` this one is under (same origin, and a path within)."""
        return next(
            (
                other
                for other in locations
                if self.origin == other.origin
                and self.segments[: len(other.segments)] == other.segments
            ),
            None,
        )

    def __str__(self) -> str:
        return "/".join((self.origin, *self.segments))


class _Refused(Exception):
    """An exchange given up on before its answer was read: `kind` is the metrics label,
    `what` says in fixed words what the server did."""

    def __init__(self, kind: str, what: str) -> None:
        super().__init__(what)
        self.kind = kind
        self.what = what


def _too_large(cap: int) -> str:
    return f"answered with more than {cap} bytes, more than any MLflow answer aliasop reads"


def _failure(exc: Exception, deadline: float) -> tuple[str, str]:
    """The metrics label and fixed words of an exchange that failed: never the text of the
    error, which may quote what the server sent."""
    if isinstance(exc, _Refused):
        return exc.kind, exc.what
    if isinstance(exc, _NoSlot):
        return "no_slot", str(exc)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "deadline", f"gave no complete answer within {deadline:g} s"
    if isinstance(exc, httpx.InvalidURL):
        return "invalid_url", "is not a URL the operator can send requests to"
    if isinstance(exc, httpx.ProtocolError | httpx.DecodingError):
        return "unexpected", "did not answer in HTTP the operator understands"
    return "unreachable", f"did not answer: the connection failed ({type(exc).__name__})"


class _NoSlot(TimeoutError):
    """No slot came free in time (see _Slots)."""


class _Slots:
    """How many MLflow exchanges run at once. Each of the operator's own tracking URIs (its
    default one, and those that get credentials) has `concurrency` slots of its own; every
    other
    server shares one pool of `concurrency`, at most `per_origin` of them each. So servers
    that ModelDeployments name can neither take the operator's own server's slots nor one of
    them all of the rest. A wait for a slot ends after `wait` seconds."""

    def __init__(self, concurrency: int, per_origin: int, wait: float) -> None:
        self._concurrency = concurrency
        self._per_origin = per_origin
        self._wait = wait
        self._shared = asyncio.Semaphore(concurrency)
        self._pools: dict[str, tuple[asyncio.Semaphore, int]] = {}  # -> (slots, users)

    @contextlib.asynccontextmanager
    async def hold(self, pool: str, own: bool) -> AsyncIterator[None]:
        """A slot of `pool` (one of the operator's tracking URIs when `own`, else an origin),
        and of the
        shared pool unless `own`; raises _NoSlot after waiting `wait` seconds."""
        slots, users = self._pools.get(pool) or (
            asyncio.Semaphore(self._concurrency if own else self._per_origin),
            0,
        )
        self._pools[pool] = (slots, users + 1)
        needed = [slots] if own else [slots, self._shared]
        held: list[asyncio.Semaphore] = []
        try:
            try:
                async with asyncio.timeout(self._wait):
                    for semaphore in needed:
                        await semaphore.acquire()
                        held.append(semaphore)
            except TimeoutError:
                raise _NoSlot(self._busy(own, shared=bool(held))) from None
            yield
        finally:
            for semaphore in held:
                semaphore.release()
            slots, users = self._pools[pool]
            if users == 1:  # nobody holds or waits for this pool's slots: forget it
                del self._pools[pool]
            else:
                self._pools[pool] = (slots, users - 1)

    def _busy(self, own: bool, shared: bool) -> str:
        if shared:
            return (
                f"got none of the {self._concurrency} request slots the operator shares "
                f"among the servers ModelDeployments name within {self._wait:g} s (others "
                "are slow to answer)"
            )
        count = self._concurrency if own else self._per_origin
        return (
            f"got none of its {count} request slots within {self._wait:g} s: its answers to "
            "earlier requests are still awaited"
        )


def _access_denied(
    tracking_uri: str,
    url: httpx.URL,
    answer: _Answer,
    trusted: bool,
    model: str,
    writing: bool = False,
) -> str:
    """What a 401 or 403 from MLflow means, and what to do about it."""
    said = f"MLflow at {tracking_uri} answered HTTP {answer.status}"
    invalid_host = INVALID_HOST.encode() in answer.body
    if writing and trusted and answer.status == 401:
        return (
            f"{said}: it refused the operator's writer credentials (ALIASOP_REGISTRY_WRITER_*"
            ", in the Secret aliasop-mlflow-writer)"
        )
    if writing and trusted and not invalid_host:
        return f"{said}: the operator's MLflow writer may not edit model {model!r} (needs EDIT)"
    if answer.status == 401:
        if not trusted:
            return (
                f"{said}: it wants credentials, and the operator sends its MLFLOW_TRACKING_* "
                "credentials only to URLs under ALIASOP_REGISTRY_CREDENTIAL_ORIGINS (by "
                "default the operator's tracking URI)"
            )
        return (
            f"{said}: it refused the operator's credentials (MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN, in the Secret aliasop-mlflow)"
        )
    if invalid_host:
        return (
            f"{said}: it does not know the Host header {url.netloc.decode()!r}"
            " (MLflow 3 refuses unknown Host headers: start it with --allowed-hosts)"
        )
    return f"{said}: the operator's MLflow user may not read model {model!r} (it needs READ)"


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
