"""Every exchange with a server a ModelDeployment names is bounded (time, size, slots), and
whatever it answers that is not MLflow's API is a RegistryProblem in a few fixed words.
Against stand-in servers (aiohttp on localhost); the real MLflow and operator are in
tests/integration/test_tenancy_registry.py."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from pydantic import SecretStr

from aliasop.models import ModelUri, Reason, RegistryProblem
from aliasop.registry import MlflowRegistry
from aliasop.settings import RegistryAccess

pytestmark = pytest.mark.timeout(30)

BIKES = ModelUri("bikes", "champion")
MODEL = {"registered_model": {"aliases": [{"alias": "champion", "version": "1"}]}}
VERSION = {"model_version": {"status": "READY", "run_id": "r1"}}
SECRET_MARK = "SECRET-BODY-TEXT"  # what a server says, that must never reach a message
GZIP_BOMB = gzip.compress(b" " * (16 << 20))  # 16 KiB that inflate to 16 MiB
OTHER_JSON = "JSON that is not what MLflow answers to this request"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class StandIn:
    """A server whose answer to every request is `handler`'s; records each request's path
    and Authorization header."""

    handler: Handler
    url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, request.headers.get("Authorization")))
        return await self.handler(request)


async def mlflow_like(request: web.Request) -> web.StreamResponse:
    if request.path.endswith("registered-models/get"):
        return web.json_response(MODEL)
    return web.json_response(VERSION)


async def drip(request: web.Request) -> web.StreamResponse:
    """A byte every half second, for ever: each read is quick, the answer never ends."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    while True:
        await response.write(b" ")
        await asyncio.sleep(0.5)


async def maintenance_page(_: web.Request) -> web.StreamResponse:
    return web.Response(
        text=f"<html><body>{SECRET_MARK} back soon</body></html>", content_type="text/html"
    )


async def not_json(_: web.Request) -> web.StreamResponse:
    return web.Response(text=f"{SECRET_MARK} plain words", content_type="text/plain")


async def wrong_shape(_: web.Request) -> web.StreamResponse:
    return web.json_response({"registered_model": {"aliases": [{"alias": SECRET_MARK}]}})


async def odd_version(request: web.Request) -> web.StreamResponse:
    """A model as MLflow answers, then a version whose status and run id are no MLflow's."""
    if request.path.endswith("registered-models/get"):
        return web.json_response(MODEL)
    return web.json_response({"model_version": {"status": SECRET_MARK, "run_id": "r1 <b>"}})


async def a_list(_: web.Request) -> web.StreamResponse:
    return web.json_response([SECRET_MARK])


async def endless_body(request: web.Request) -> web.StreamResponse:
    """A 200 of unbounded length, no Content-Length: only reading it shows how long."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    chunk = b"[" * 65536
    while True:
        await response.write(chunk)


async def declared_huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": str(10**12)})
    await response.prepare(request)
    await response.write(b"{")
    await asyncio.sleep(30)
    return response


async def error_with_code(_: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"error_code": f"{SECRET_MARK} <b>", "message": SECRET_MARK}, status=503
    )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[StandIn]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> StandIn:
        stand_in = StandIn(handler)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", stand_in.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        stand_in.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return stand_in

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def registry() -> AsyncIterator[Callable[..., MlflowRegistry]]:
    made: list[MlflowRegistry] = []

    def make(**options: object) -> MlflowRegistry:
        settings: dict[str, object] = {"timeout_seconds": 1.0, "concurrency": 4, **options}
        made.append(MlflowRegistry(**settings))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for one in made:
        await one.aclose()


async def problem(registry: MlflowRegistry, tracking_uri: str) -> RegistryProblem:
    with pytest.raises(RegistryProblem) as raised:
        await registry.resolve(tracking_uri, BIKES)
    assert SECRET_MARK not in raised.value.message  # never what the server said
    return raised.value


async def test_a_drip_fed_answer_ends_at_the_deadline(
    serve: Callable[[Handler], Awaitable[StandIn]], registry: Callable[..., MlflowRegistry]
) -> None:
    server = await serve(drip)  # never ends: only the deadline ends the exchange
    found = await problem(registry(timeout_seconds=1.0), server.url)
    assert found.kind is Reason.REGISTRY_UNAVAILABLE
    assert found.message == f"MLflow at {server.url} gave no complete answer within 1 s"


@pytest.mark.parametrize(
    ("handler", "what"),
    [
        (maintenance_page, "answered HTTP 200 with an HTML page, not MLflow's JSON"),
        (not_json, "answered HTTP 200 with a body that is not JSON, not MLflow's answer"),
        (wrong_shape, f"answered HTTP 200 with {OTHER_JSON}"),
        (odd_version, f"answered HTTP 200 with {OTHER_JSON}"),
        (a_list, f"answered HTTP 200 with {OTHER_JSON}"),
        (error_with_code, "answered HTTP 503"),
    ],
    ids=["maintenance-page", "not-json", "wrong-shape", "odd-version", "a-list", "error-code"],
)
async def test_answers_that_are_not_mlflow_s_are_reported_in_fixed_words(
    serve: Callable[[Handler], Awaitable[StandIn]],
    registry: Callable[..., MlflowRegistry],
    handler: Handler,
    what: str,
) -> None:
    server = await serve(handler)
    found = await problem(registry(), server.url)
    assert found.kind is Reason.REGISTRY_UNAVAILABLE
    assert found.message == f"MLflow at {server.url} {what}"


async def test_a_compressed_answer_it_did_not_ask_for_is_refused(
    serve: Callable[[Handler], Awaitable[StandIn]], registry: Callable[..., MlflowRegistry]
) -> None:
    async def gzipped(request: web.Request) -> web.StreamResponse:
        assert request.headers["Accept-Encoding"] == "identity"
        return web.Response(body=GZIP_BOMB, headers={"Content-Encoding": "gzip"})

    server = await serve(gzipped)
    found = await problem(registry(timeout_seconds=10), server.url)
    assert found.message == (
        f"MLflow at {server.url} answered with a compressed body it was not asked for"
    )


@pytest.mark.parametrize("handler", [endless_body, declared_huge], ids=["endless", "declared"])
async def test_an_answer_beyond_the_cap_is_refused_as_it_streams_in(
    serve: Callable[[Handler], Awaitable[StandIn]],
    registry: Callable[..., MlflowRegistry],
    handler: Handler,
) -> None:
    server = await serve(handler)
    found = await problem(registry(timeout_seconds=20, max_response_bytes=1 << 20), server.url)
    assert found.message == (
        f"MLflow at {server.url} answered with more than 1048576 bytes, more than any MLflow "
        "answer aliasop reads"
    )


async def test_a_tracking_uri_that_is_no_url_is_a_registry_problem(
    registry: Callable[..., MlflowRegistry],
) -> None:
    found = await problem(registry(), "http://mlflow:abc")
    assert found.kind is Reason.REGISTRY_UNAVAILABLE
    assert found.message == (
        "MLflow at http://mlflow:abc is not a URL the operator can send requests to"
    )


async def test_one_slow_server_holds_at_most_its_share_of_slots(
    serve: Callable[[Handler], Awaitable[StandIn]], registry: Callable[..., MlflowRegistry]
) -> None:
    slow, fast, own = await serve(drip), await serve(mlflow_like), await serve(mlflow_like)
    shared = registry(
        timeout_seconds=3.0,
        concurrency=4,
        origin_concurrency=2,
        slot_wait_seconds=0.5,
        credential_origins=[own.url],
    )
    # Twenty lookups of twenty models on the slow server: two hold its slots, the rest
    # give up waiting for one, after half a second.
    stalled = [asyncio.ensure_future(shared.aliases(slow.url, f"m{i}")) for i in range(20)]
    await asyncio.sleep(0)  # they take their slots first
    assert (await shared.resolve(fast.url, BIKES)).version == "1"
    assert (await shared.resolve(own.url, BIKES)).version == "1"
    problems = await asyncio.gather(*stalled, return_exceptions=True)
    assert all(isinstance(p, RegistryProblem) for p in problems)
    messages = {p.message for p in problems if isinstance(p, RegistryProblem)}
    assert messages == {
        f"MLflow at {slow.url} gave no complete answer within 3 s",
        f"MLflow at {slow.url} got none of its 2 request slots within 0.5 s: its answers to "
        "earlier requests are still awaited",
    }
    assert len(slow.requests) == 2


async def test_the_shared_slots_are_not_the_operator_s_own_server_s(
    serve: Callable[[Handler], Awaitable[StandIn]], registry: Callable[..., MlflowRegistry]
) -> None:
    """Slow servers on many origins can fill the shared pool, never the slots of the
    operator's own server (its tracking URI: slots of its own, credentials or not)."""
    slow = [await serve(drip) for _ in range(3)]
    own = await serve(mlflow_like)
    shared = registry(
        timeout_seconds=3.0,
        concurrency=2,
        origin_concurrency=1,
        slot_wait_seconds=0.5,
        access=RegistryAccess(token=SecretStr("t0ken")),
        own_servers=[own.url],
    )
    stalled = [asyncio.ensure_future(shared.aliases(s.url, "m")) for s in slow]
    await asyncio.sleep(0)
    assert (await shared.resolve(own.url, BIKES)).version == "1"
    assert {authorization for _, authorization in own.requests} == {None}
    problems = await asyncio.gather(*stalled, return_exceptions=True)
    busy = [p for p in problems if isinstance(p, RegistryProblem) and "shares" in p.message]
    assert len(busy) == 1  # the third found the two shared slots taken
    assert busy[0].message.endswith(
        "got none of the 2 request slots the operator shares among the servers "
        "ModelDeployments name within 0.5 s (others are slow to answer)"
    )


@pytest.mark.parametrize(
    ("path", "authorization"),
    [
        ("/mlflow", "Bearer t0ken"),
        ("/mlflow/", "Bearer t0ken"),
        ("/mlflow/nested", "Bearer t0ken"),
        ("/other-app", None),
        ("/mlflow-other", None),
        ("/mlflow/../other-app", None),
        ("/mlflow/%2e%2e/other-app", None),
        ("", None),
    ],
)
async def test_credentials_go_only_under_the_trusted_tracking_uri_path_included(
    serve: Callable[[Handler], Awaitable[StandIn]],
    registry: Callable[..., MlflowRegistry],
    path: str,
    authorization: str | None,
) -> None:
    server = await serve(mlflow_like)
    token = RegistryAccess(token=SecretStr("t0ken"))
    trusted = registry(access=token, credential_origins=[f"{server.url}/mlflow"])
    await trusted.resolve(f"{server.url}{path}", BIKES)
    assert {sent for _, sent in server.requests} == {authorization}
