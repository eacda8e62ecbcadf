"""kube.Cluster against a stand-in API server (aiohttp on localhost): the requests it sends,
the errors it raises, the applies it skips and the ordering of its writes."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest
from aiohttp import web

from aliasop.builders import get_child_revision
from aliasop.interfaces import ApiError, NameClash
from aliasop.kube import _RETRY_AFTER_MAX_SECONDS, Cluster, _seconds


@dataclass
class StandIn:
    """Records each request; `respond` decides the answer (default: the generation 1)."""

    server: str = ""
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # body None: a GET's
    respond: Callable[[web.Request], Awaitable[web.Response]] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            (request.path_qs, request.headers["Content-Type"], json.loads(body) if body else None)
        )
        if self.respond is not None:
            return await self.respond(request)
        return web.json_response({"metadata": {"generation": 1}})


@pytest.fixture
async def api() -> AsyncIterator[tuple[StandIn, Cluster]]:
    stand_in = StandIn()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", stand_in.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stand_in.server = f"http://127.0.0.1:{port}"
    cluster = Cluster(children_concurrency=2, status_concurrency=1, timeout_seconds=5)
    cluster.connect(kopf.ConnectionInfo(server=stand_in.server, token="t0ken"))
    # The children most tests write are their owner's, as the watch showed: written without
    # asking whose they are (see the tests of ownership below).
    for child in (deployment("a"), deployment("b"), service("a")):
        cluster.seen(child, deleted=False)
    yield stand_in, cluster
    await cluster.aclose()
    await runner.cleanup()


OWNER_UID = "uid-of-a"


def owned_by(uid: str, name: str = "a") -> list[dict[str, Any]]:
    """The ownerReferences of a child of the ModelDeployment `name` with this uid."""
    return [
        {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": name,
            "uid": uid,
            "controller": True,
        }
    ]


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns", "ownerReferences": owned_by(OWNER_UID)},
        "spec": {"replicas": replicas},
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "ns", "ownerReferences": owned_by(OWNER_UID)},
    }


@pytest.mark.timeout(10)
async def test_applies_and_status_writes_are_the_right_patches(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, cluster = api
    await cluster.apply(deployment("a"), current_revision=None)
    await cluster.apply(service("a"), current_revision=None)
    await cluster.patch_status("ns", "a", {"phase": "Ready", "message": None})
    assert stand_in.requests == [
        (
            "/apis/apps/v1/namespaces/ns/deployments/a?fieldManager=aliasop&force=true",
            "application/apply-patch+yaml",
            deployment("a"),
        ),
        (
            "/api/v1/namespaces/ns/services/a?fieldManager=aliasop&force=true",
            "application/apply-patch+yaml",
            service("a"),
        ),
        (
            "/apis/aliasop.io/v1alpha1/namespaces/ns/modeldeployments/a/status",
            "application/merge-patch+json",
            {"status": {"phase": "Ready", "message": None}},
        ),
    ]


@pytest.mark.timeout(10)
async def test_an_unchanged_apply_is_skipped_until_someone_changes_the_object(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, cluster = api
    await cluster.apply(deployment("a"), current_revision=None)
    as_applied = get_child_revision({"metadata": {"generation": 1}})
    await cluster.apply(deployment("a"), current_revision=as_applied)
    assert len(stand_in.requests) == 1
    edited = get_child_revision({"metadata": {"generation": 2}})
    await cluster.apply(deployment("a"), current_revision=edited)  # someone edited the spec
    relabelled = get_child_revision({"metadata": {"generation": 1, "labels": {"a": "b"}}})
    await cluster.apply(deployment("a"), current_revision=relabelled)  # ... or its labels
    await cluster.apply(deployment("a", replicas=2), current_revision=as_applied)  # new manifest
    assert len(stand_in.requests) == 4
    await cluster.apply(deployment("a", replicas=2), current_revision=None)  # deleted
    assert len(stand_in.requests) == 5
    cluster.forget("ns", "a")
    await cluster.apply(deployment("a", replicas=2), current_revision=as_applied)
    assert len(stand_in.requests) == 6


@pytest.mark.timeout(10)
async def test_a_service_is_reapplied_whenever_its_resource_version_moved(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, cluster = api
    stand_in.respond = lambda _: _json({"metadata": {"resourceVersion": "7"}})
    await cluster.apply(service("a"), current_revision=None)
    await cluster.apply(service("a"), current_revision="7")
    assert len(stand_in.requests) == 1
    await cluster.apply(service("a"), current_revision="8")  # edited: put back
    await cluster.apply(service("a"), current_revision=None)  # deleted: created again
    assert len(stand_in.requests) == 3


async def _json(body: dict[str, Any]) -> web.Response:
    return web.json_response(body)


@pytest.mark.timeout(10)
async def test_an_error_status_raises_with_the_api_message(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, cluster = api

    async def invalid(_: web.Request) -> web.Response:
        status = {"kind": "Status", "message": 'Deployment "a" is invalid: spec.replicas'}
        return web.json_response(status, status=422)

    stand_in.respond = invalid
    with pytest.raises(ApiError) as raised:
        await cluster.apply(deployment("a"), current_revision=None)
    assert (raised.value.status, raised.value.message) == (
        422,
        'Deployment "a" is invalid: spec.replicas',
    )

    async def unavailable(_: web.Request) -> web.Response:
        return web.Response(status=503, text="not JSON")

    stand_in.respond = unavailable
    with pytest.raises(ApiError, match="HTTP 503: Service Unavailable"):
        await cluster.patch_status("ns", "a", {})


@pytest.mark.timeout(10)
async def test_status_writes_wait_until_no_apply_is_in_flight(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, cluster = api
    apply_arrived, release_apply = asyncio.Event(), asyncio.Event()

    async def slow_apply(request: web.Request) -> web.Response:
        if "/deployments/" in request.path:
            apply_arrived.set()
            await release_apply.wait()
        return web.json_response({"metadata": {"generation": 1}})

    stand_in.respond = slow_apply
    apply = asyncio.create_task(cluster.apply(deployment("a"), current_revision=None))
    await apply_arrived.wait()
    status = asyncio.create_task(cluster.patch_status("ns", "b", {"phase": "Ready"}))
    done, _ = await asyncio.wait({status}, timeout=0.2)
    assert not done and len(stand_in.requests) == 1  # held back while the apply runs

    release_apply.set()
    await asyncio.gather(apply, status)
    assert [path.split("?")[0] for path, _, _ in stand_in.requests] == [
        "/apis/apps/v1/namespaces/ns/deployments/a",
        "/apis/aliasop.io/v1alpha1/namespaces/ns/modeldeployments/b/status",
    ]


@pytest.mark.timeout(10)
async def test_requests_carry_the_credentials_of_the_last_login(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, cluster = api
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.json_response({})

    stand_in.respond = record
    await cluster.patch_status("ns", "a", {})
    cluster.connect(kopf.ConnectionInfo(server=stand_in.server, token="renewed"))
    await cluster.patch_status("ns", "a", {})
    assert seen == ["Bearer t0ken", "Bearer renewed"]


@pytest.mark.timeout(10)
async def test_a_call_without_answer_times_out_with_a_readable_error(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, _ = api
    never = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await never.wait()
        return web.json_response({})

    stand_in.respond = hang
    impatient = Cluster(children_concurrency=1, status_concurrency=1, timeout_seconds=0.2)
    impatient.connect(kopf.ConnectionInfo(server=stand_in.server))
    with pytest.raises(TimeoutError, match=r"no answer within 0\.2s"):
        await impatient.patch_status("ns", "a", {})
    await impatient.aclose()
    never.set()


@pytest.mark.timeout(10)
async def test_an_event_names_its_object(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, cluster = api
    paths: list[str] = []

    async def created(request: web.Request) -> web.Response:
        paths.append(f"{request.method} {request.path}")
        return web.json_response({}, status=201)

    stand_in.respond = created
    involved = {
        "apiVersion": "aliasop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bikes", "namespace": "ns", "uid": "u-1", "generation": 3},
    }
    at = datetime.datetime(2026, 11, 26, 12, 0, 5, tzinfo=datetime.UTC)
    await cluster.post_event(involved, "Warning", "RolloutFailed", "x" * 2000, at)

    assert paths == ["POST /api/v1/namespaces/ns/events"]
    _, content_type, event = stand_in.requests[0]
    assert content_type == "application/json"
    assert event["metadata"] == {"generateName": "bikes.", "namespace": "ns"}
    assert event["involvedObject"] == {
        "apiVersion": "aliasop.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "bikes",
        "namespace": "ns",
        "uid": "u-1",
    }
    assert (event["type"], event["reason"], len(event["message"])) == (
        "Warning",
        "RolloutFailed",
        1024,
    )
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-11-26T12:00:05Z"


@pytest.mark.timeout(10)
async def test_a_401_logs_in_afresh_and_carries_on(api: tuple[StandIn, Cluster]) -> None:
    """An expired token (a rotated ServiceAccount token): kopf re-logs in for its own calls,
    aliasop's log in afresh the same way."""
    stand_in, cluster = api
    tokens: list[str] = []

    async def respond(request: web.Request) -> web.Response:
        tokens.append(request.headers["Authorization"])
        if request.headers["Authorization"] != "Bearer fresh":
            return web.json_response({"message": "Unauthorized"}, status=401)
        return web.json_response({"metadata": {"generation": 1}})

    stand_in.respond = respond
    fresh = kopf.ConnectionInfo(server=stand_in.server, token="fresh")
    cluster.connect(kopf.ConnectionInfo(server=stand_in.server, token="t0ken"), lambda: fresh)
    await cluster.apply(deployment("a"), current_revision=None)
    assert tokens == ["Bearer t0ken", "Bearer fresh"]

    cluster.connect(kopf.ConnectionInfo(server=stand_in.server, token="t0ken"), lambda: None)
    with pytest.raises(ApiError, match="HTTP 401"):  # no fresh credentials: reported
        await cluster.apply(deployment("b"), current_revision=None)


@pytest.mark.timeout(10)
async def test_a_429_waits_as_retry_after_says_then_gives_up(api: tuple[StandIn, Cluster]) -> None:
    stand_in, cluster = api
    answers = [429, 429, 200]

    async def respond(request: web.Request) -> web.Response:
        status = answers.pop(0) if answers else 429
        if status == 429:
            return web.json_response(
                {"message": "slow down"}, status=429, headers={"Retry-After": "0"}
            )
        return web.json_response({"metadata": {"generation": 1}})

    stand_in.respond = respond
    await cluster.apply(deployment("a"), current_revision=None)
    assert len(stand_in.requests) == 3  # two waits, then through
    with pytest.raises(ApiError, match="HTTP 429: slow down"):  # always busy: the pass backs off
        await cluster.apply(deployment("b"), current_revision=None)
    assert len(stand_in.requests) == 3 + 4


def answering(
    status: int, body: dict[str, Any] | str, retry_after: str | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A `respond` that always gives this answer (a str body: not JSON)."""
    headers = {"Retry-After": retry_after} if retry_after is not None else None

    async def respond(_: web.Request) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return respond


@pytest.mark.timeout(10)
async def test_a_429_waits_as_long_as_retry_after_says(api: tuple[StandIn, Cluster]) -> None:
    stand_in, cluster = api
    slow_down = answering(429, {"message": "slow down"}, retry_after="1")

    async def then_through(request: web.Request) -> web.Response:
        stand_in.respond = None
        return await slow_down(request)

    stand_in.respond = then_through
    started = time.monotonic()
    await cluster.apply(deployment("a"), current_revision=None)
    assert time.monotonic() - started >= 0.95  # a lower bound the client must honour
    assert len(stand_in.requests) == 2


@pytest.mark.timeout(10)
def test_retry_after_is_bounded_and_a_date_waits_a_second() -> None:
    """A longer wait is the pass's back-off's to make; the API server sends seconds, so an
    HTTP-date (which would need the server's clock) is read as no advice."""
    assert _seconds("999") == _RETRY_AFTER_MAX_SECONDS == 10
    assert _seconds("2.5") == 2.5
    assert _seconds("-3") == 0
    assert _seconds("Wed, 21 Oct 2026 07:28:00 GMT") == _seconds(None) == 1


@pytest.mark.timeout(10)
async def test_a_401_after_a_429_still_logs_in_afresh(api: tuple[StandIn, Cluster]) -> None:
    """The token may expire while a call waits out a 429: the re-login is not the first
    attempt's only."""
    stand_in, cluster = api
    tokens: list[str] = []

    async def respond(request: web.Request) -> web.Response:
        tokens.append(request.headers["Authorization"])
        if len(tokens) == 1:
            return web.json_response(
                {"message": "slow down"}, status=429, headers={"Retry-After": "0"}
            )
        if request.headers["Authorization"] != "Bearer fresh":
            return web.json_response({"message": "Unauthorized"}, status=401)
        return web.json_response({"metadata": {"generation": 1}})

    stand_in.respond = respond
    fresh = kopf.ConnectionInfo(server=stand_in.server, token="fresh")
    cluster.connect(kopf.ConnectionInfo(server=stand_in.server, token="t0ken"), lambda: fresh)
    await cluster.apply(deployment("a"), current_revision=None)
    assert tokens == ["Bearer t0ken", "Bearer t0ken", "Bearer fresh"]


# The API server's answers (as `kubectl -v=8` shows them) when the Deployment asked about does
# not exist, and when the namespace a write names does not (an apply into it).
DEPLOYMENT_NOT_FOUND = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": 'deployments.apps "a" not found',
    "reason": "NotFound",
    "details": {"name": "a", "group": "apps", "kind": "deployments"},
    "code": 404,
}
NAMESPACE_NOT_FOUND = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": 'namespaces "ns" not found',
    "reason": "NotFound",
    "details": {"name": "ns", "kind": "namespaces"},
    "code": 404,
}


@pytest.mark.timeout(10)
async def test_a_404_naming_the_object_asked_about_means_it_is_gone(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, cluster = api
    stand_in.respond = answering(404, DEPLOYMENT_NOT_FOUND)
    await cluster.delete(deployment("a"))  # deleted already: done
    await cluster.claim(deployment("a"))  # absent: free to take
    assert [path for path, _, _ in stand_in.requests] == [
        "/apis/apps/v1/namespaces/ns/deployments/a"
    ] * 2


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("asked", "answer"),
    [
        (deployment("a"), NAMESPACE_NOT_FOUND),
        (service("a"), DEPLOYMENT_NOT_FOUND),  # the same name, another kind
        (deployment("a"), "404 page not found"),  # no Status: a path not served, a proxy's
    ],
    ids=["namespace", "another-kind", "no-status"],
)
async def test_a_404_naming_another_object_raises(
    api: tuple[StandIn, Cluster], asked: dict[str, Any], answer: dict[str, Any] | str
) -> None:
    stand_in, cluster = api
    stand_in.respond = answering(404, answer)
    with pytest.raises(ApiError, match="HTTP 404"):
        await cluster.delete(asked)
    cluster.seen(asked, deleted=True)  # not known to be its owner's: asked about first
    with pytest.raises(ApiError, match="HTTP 404"):
        await cluster.claim(asked)
    with pytest.raises(ApiError, match="HTTP 404"):
        await cluster.get_lease("ns", "a")


# --- ownership: aliasop writes only the children it controls ------------------------------


@dataclass
class Objects:
    """What a stand-in API server holds, by path: GET, apply (PATCH) and DELETE act on it,
    a DELETE's uid precondition included."""

    by_path: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def respond(self, request: web.Request) -> web.Response:
        found = self.by_path.get(request.path)
        if found is None and request.method in ("GET", "DELETE"):
            plural, name = request.path.split("/")[-2:]
            status = {"reason": "NotFound", "details": {"name": name, "kind": plural}}
            return web.json_response({**status, "message": f"{name} not found"}, status=404)
        if request.method == "GET":
            return web.json_response(found)
        body = await request.json()
        if request.method == "DELETE":
            assert found is not None
            wanted = (body.get("preconditions") or {}).get("uid")
            if wanted is not None and wanted != found["metadata"]["uid"]:
                return web.json_response({"message": "Precondition failed: UID"}, status=409)
            del self.by_path[request.path]
            return web.json_response({"kind": "Status", "status": "Success"})
        uid = found["metadata"]["uid"] if found else f"uid-{len(self.by_path)}"
        if body["metadata"].get("uid", uid) != uid:  # as the API server: a precondition
            return web.json_response({"message": "Precondition failed: UID"}, status=409)
        self.by_path[request.path] = {**body, "metadata": {**body["metadata"], "uid": uid}}
        return web.json_response(self.by_path[request.path])


SERVICE_WEB = "/api/v1/namespaces/ns/services/web"
DEPLOYMENT_WEB = "/apis/apps/v1/namespaces/ns/deployments/web"


def made_by_hand(
    kind: str, owners: list[dict[str, Any]] | None = None, **annotations: str
) -> dict[str, Any]:
    """An object `web` aliasop did not make: a selector of its own, these owners."""
    return {
        "apiVersion": "v1" if kind == "Service" else "apps/v1",
        "kind": kind,
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "uid": "uid-of-web",
            "annotations": annotations,
            "ownerReferences": owners or [],
        },
        "spec": {"selector": {"app": "web-frontend"}},
    }


def methods(stand_in: StandIn) -> list[str]:
    """The requests sent so far, as (method) path: a GET's body is None."""
    return [
        ("GET " if body is None else "") + path.split("?")[0] for path, _, body in stand_in.requests
    ]


@pytest.fixture
def objects(api: tuple[StandIn, Cluster]) -> Objects:
    held = Objects()
    api[0].respond = held.respond
    return held


@pytest.mark.timeout(10)
async def test_a_child_is_created_where_there_is_none_then_known_as_its_owners(
    api: tuple[StandIn, Cluster], objects: Objects
) -> None:
    stand_in, cluster = api
    await cluster.apply(service("web"), current_revision=None)
    assert methods(stand_in) == [f"GET {SERVICE_WEB}", SERVICE_WEB]  # absent: created
    changed = {**service("web"), "spec": {"ports": [{"port": 80}]}}
    await cluster.apply(changed, current_revision=None)
    await cluster.claim(changed)
    assert methods(stand_in) == [f"GET {SERVICE_WEB}", SERVICE_WEB, SERVICE_WEB]  # no asking
    assert objects.by_path[SERVICE_WEB]["spec"] == {"ports": [{"port": 80}]}


@pytest.mark.timeout(10)
async def test_a_child_a_claim_found_absent_is_created_without_asking_again(
    api: tuple[StandIn, Cluster], objects: Objects
) -> None:
    stand_in, cluster = api
    await cluster.claim(service("web"))
    await cluster.apply(service("web"), current_revision=None)
    assert methods(stand_in) == [f"GET {SERVICE_WEB}", SERVICE_WEB]  # asked once
    # Made by hand since a claim: the watch shows it, and the apply asks again.
    del objects.by_path[SERVICE_WEB]
    cluster.seen({**service("web"), "metadata": {**service("web")["metadata"]}}, deleted=True)
    await cluster.claim(deployment("web"))
    objects.by_path[DEPLOYMENT_WEB] = made_by_hand("Deployment")
    cluster.seen(made_by_hand("Deployment"), deleted=False)
    with pytest.raises(NameClash):
        await cluster.apply(deployment("web"), None)
    assert objects.by_path[DEPLOYMENT_WEB] == made_by_hand("Deployment")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["Service", "Deployment"])
async def test_an_object_made_by_hand_is_neither_changed_nor_deleted(
    api: tuple[StandIn, Cluster], objects: Objects, kind: str
) -> None:
    stand_in, cluster = api
    path = SERVICE_WEB if kind == "Service" else DEPLOYMENT_WEB
    objects.by_path[path] = made_by_hand(kind)
    before = json.dumps(objects.by_path, sort_keys=True)
    ours = service("web") if kind == "Service" else deployment("web")

    for write in (cluster.claim(ours), cluster.apply(ours, None), cluster.delete(ours)):
        with pytest.raises(NameClash) as clash:
            await write
        assert str(clash.value) == (
            f"the {kind} web exists and belongs to no owner (made by hand?): aliasop leaves "
            "it alone. Rename or delete it, rename this resource, or hand it over with the "
            "annotation aliasop.io/adopt=a on it"
        )

    assert methods(stand_in) == [f"GET {path}"] * 3  # asked, never written
    assert json.dumps(objects.by_path, sort_keys=True) == before


@pytest.mark.timeout(10)
async def test_another_modeldeployments_child_is_neither_changed_nor_deleted(
    api: tuple[StandIn, Cluster], objects: Objects
) -> None:
    """`a-stable`, the main Service of a ModelDeployment of that name, is also the name of
    a's stable-side Service: a never touches it. What the watch shows of another's object
    is not trusted: the API server is asked before a write is refused."""
    stand_in, cluster = api
    path = "/api/v1/namespaces/ns/services/a-stable"
    theirs = {**service("a-stable"), "metadata": {**service("a-stable")["metadata"]}}
    theirs["metadata"].update(uid="uid-x", ownerReferences=owned_by("uid-of-a-stable", "a-stable"))
    objects.by_path[path] = theirs
    cluster.seen(theirs, deleted=False)

    for write in (cluster.apply(service("a-stable"), None), cluster.delete(service("a-stable"))):
        with pytest.raises(
            NameClash, match=r"belongs to another owner \(ModelDeployment a-stable\): "
        ):
            await write

    assert methods(stand_in) == [f"GET {path}"] * 2
    assert objects.by_path[path] == theirs


@pytest.mark.timeout(10)
async def test_the_adopt_annotation_hands_an_object_over_to_the_resource_it_names(
    api: tuple[StandIn, Cluster], objects: Objects
) -> None:
    stand_in, cluster = api
    for not_to_a in (
        made_by_hand("Deployment", **{"aliasop.io/adopt": "b"}),  # to another resource
        made_by_hand("Deployment", owned_by("uid-of-rs", "rs"), **{"aliasop.io/adopt": "a"}),
    ):
        objects.by_path[DEPLOYMENT_WEB] = not_to_a
        with pytest.raises(NameClash):
            await cluster.apply(deployment("web"), None)
        assert objects.by_path[DEPLOYMENT_WEB] == not_to_a

    handed_over = made_by_hand("Deployment", **{"aliasop.io/adopt": "a"})
    objects.by_path[DEPLOYMENT_WEB] = handed_over
    with pytest.raises(NameClash):  # a handover is for applies: never deleted unless taken
        await cluster.delete(deployment("web"))
    assert objects.by_path[DEPLOYMENT_WEB] == handed_over

    await cluster.claim(deployment("web"))
    await cluster.apply(deployment("web"), None)
    taken = objects.by_path[DEPLOYMENT_WEB]
    assert taken["metadata"]["ownerReferences"] == owned_by(OWNER_UID)
    assert taken["metadata"]["uid"] == "uid-of-web"  # the same object, not one made anew
    await cluster.delete(deployment("web"))  # now it is a's
    assert DEPLOYMENT_WEB not in objects.by_path
    assert [m for m in methods(stand_in) if not m.startswith("GET")] == [DEPLOYMENT_WEB] * 2


@pytest.mark.timeout(10)
async def test_a_delete_names_the_uid_of_the_object_it_checked(
    api: tuple[StandIn, Cluster], objects: Objects
) -> None:
    stand_in, cluster = api
    ours = {**deployment("web"), "metadata": {**deployment("web")["metadata"], "uid": "u1"}}
    cluster.seen(ours, deleted=False)
    # Deleted and made anew since the watch showed it: the API server refuses the delete.
    objects.by_path[DEPLOYMENT_WEB] = made_by_hand("Deployment")
    with pytest.raises(ApiError, match="HTTP 409"):
        await cluster.delete(deployment("web"))
    assert stand_in.requests[-1][2]["preconditions"] == {"uid": "u1"}
    assert objects.by_path[DEPLOYMENT_WEB] == made_by_hand("Deployment")

    objects.by_path[DEPLOYMENT_WEB] = ours
    await cluster.delete(deployment("web"))
    assert DEPLOYMENT_WEB not in objects.by_path
    await cluster.delete(deployment("web"))  # gone: asked, nothing to delete
    assert methods(stand_in)[-1] == f"GET {DEPLOYMENT_WEB}"


@pytest.mark.timeout(10)
async def test_what_the_watch_shows_decides_when_to_ask(
    api: tuple[StandIn, Cluster], objects: Objects
) -> None:
    stand_in, cluster = api
    objects.by_path[DEPLOYMENT_WEB] = {
        **deployment("web"),
        "metadata": {**deployment("web")["metadata"], "uid": "u1"},
    }
    cluster.seen(objects.by_path[DEPLOYMENT_WEB], deleted=False)
    await cluster.apply(deployment("web", replicas=2), None)
    assert methods(stand_in) == [DEPLOYMENT_WEB]  # known to be a's: applied at once
    cluster.seen(objects.by_path[DEPLOYMENT_WEB], deleted=True)
    await cluster.apply(deployment("web", replicas=3), None)
    assert methods(stand_in)[1:] == [f"GET {DEPLOYMENT_WEB}", DEPLOYMENT_WEB]


@pytest.mark.timeout(10)
async def test_a_manifest_naming_no_controller_is_refused_before_any_request(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, cluster = api
    orphan = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "ns"}}
    with pytest.raises(ValueError, match="the manifest of the Service x names no controller"):
        await cluster.apply(orphan, None)
    assert stand_in.requests == []


@pytest.mark.timeout(10)
async def test_a_child_of_a_deleted_resource_of_the_same_name_is_waited_for_not_taken(
    api: tuple[StandIn, Cluster], objects: Objects
) -> None:
    """`a` deleted and made anew at once: its predecessor's children (another uid) are the
    garbage collector's to delete, not the new resource's to take."""
    _, cluster = api
    left = {**service("web"), "metadata": {**service("web")["metadata"], "uid": "u0"}}
    left["metadata"]["ownerReferences"] = owned_by("uid-of-the-deleted-a")
    objects.by_path[SERVICE_WEB] = left
    with pytest.raises(NameClash) as clash:
        await cluster.apply(service("web"), None)
    assert str(clash.value) == (
        "the Service web exists and belongs to an earlier ModelDeployment a (deleted): aliasop "
        "leaves it alone. The garbage collector deletes it shortly; then aliasop makes its own"
    )
    assert objects.by_path[SERVICE_WEB] == left


@pytest.mark.timeout(10)
async def test_an_apply_names_the_uid_of_the_object_it_checked(
    api: tuple[StandIn, Cluster], objects: Objects
) -> None:
    """The watch showed a's Deployment; since, it was deleted and someone made their own
    under the name, which the watch has not shown yet: the apply is refused, not merged."""
    stand_in, cluster = api
    cluster.seen(
        {**deployment("web"), "metadata": {**deployment("web")["metadata"], "uid": "u1"}},
        deleted=False,
    )
    objects.by_path[DEPLOYMENT_WEB] = made_by_hand("Deployment")
    with pytest.raises(ApiError, match="HTTP 409"):
        await cluster.apply(deployment("web"), None)
    assert stand_in.requests[-1][2]["metadata"]["uid"] == "u1"
    with pytest.raises(NameClash):  # asked afresh
        await cluster.apply(deployment("web"), None)
    assert methods(stand_in) == [DEPLOYMENT_WEB, f"GET {DEPLOYMENT_WEB}"]
    assert objects.by_path[DEPLOYMENT_WEB] == made_by_hand("Deployment")


@pytest.mark.timeout(10)
async def test_a_status_write_can_require_the_object_unchanged_and_says_what_it_stored(
    api: tuple[StandIn, Cluster],
) -> None:
    stand_in, cluster = api

    async def stored(request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.json_response({"metadata": {"resourceVersion": "41"}, "status": {}})
        return web.json_response({"metadata": {"resourceVersion": "42"}})

    stand_in.respond = stored
    assert await cluster.patch_status("ns", "a", {"phase": "Ready"}, resource_version="41") == "42"
    assert (await cluster.read_resource("ns", "a"))["metadata"]["resourceVersion"] == "41"
    assert stand_in.requests == [
        (
            "/apis/aliasop.io/v1alpha1/namespaces/ns/modeldeployments/a/status",
            "application/merge-patch+json",
            {"status": {"phase": "Ready"}, "metadata": {"resourceVersion": "41"}},
        ),
        ("/apis/aliasop.io/v1alpha1/namespaces/ns/modeldeployments/a", "application/json", None),
    ]
