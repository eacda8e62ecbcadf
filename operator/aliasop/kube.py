"""Kubernetes I/O for the operator: apply children, write status, post Events.

Plain async HTTP (aiohttp, which kopf runs on too) with the credentials kopf logged in with:
no worker threads, and none of the official client's 24 MiB of generated models. Children come
first: in a burst (a webhook for a model a thousand resources follow) the Deployments are
updated before the status writes that report it, which wait until no apply is in flight and
then go, with Events, through a smaller lane of their own.

Children are written only when they are aliasop's to write (`Cluster.claim`): absent, or
controlled by the ModelDeployment the manifest names as controller, or (applies only) handed
over to it by a person with ADOPT_ANNOTATION. Anything else, however it is labelled, raises
NameClash and is left as it is: in a shared cluster a name is no proof of ownership.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import kopf

from aliasop.builders import (
    ADOPT_ANNOTATION,
    FIELD_MANAGER,
    SUFFIXES,
    child_name,
    get_child_revision,
    get_controller,
)
from aliasop.domain import Owner
from aliasop.interfaces import ApiError, ApiUnreachable, NameClash
from aliasop.modelbase import rfc3339
from aliasop.models import GROUP, PLURAL, VERSION

_APPLY = "application/apply-patch+yaml"  # JSON is YAML, so a JSON body is fine
_MERGE = "application/merge-patch+json"
_PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "PodDisruptionBudget": "poddisruptionbudgets",
}
_EVENT_MESSAGE_LIMIT = 1024  # longer messages are refused
_log = logging.getLogger(__name__)


_WAITS = 3  # of one call for the API server (429): then the pass's back-off takes over
_RETRY_AFTER_MAX_SECONDS = 10.0  # a longer wait is the pass's back-off's to make


def _seconds(retry_after: str | None) -> float:
    """Retry-After in seconds, bounded; 1 when it says none (or a date)."""
    try:
        return min(max(float(retry_after or 1), 0.0), _RETRY_AFTER_MAX_SECONDS)
    except ValueError:
        return 1.0


def _api_error(status: int, reason: str, body: bytes) -> ApiError:
    """Keep the API's own message (the `message` of its Status object), not the body, and
    which object a NotFound names."""
    try:
        answer = json.loads(body)
        message, details = answer.get("message"), answer.get("details") or {}
    except (ValueError, AttributeError):
        answer, message, details = {}, None, {}
    missing = None
    if status == 404 and answer.get("reason") == "NotFound" and details.get("name"):
        missing = (str(details.get("kind")), str(details["name"]))
    return ApiError(status, str(message or reason), missing)


class Cluster:
    def __init__(
        self, children_concurrency: int, status_concurrency: int, timeout_seconds: float
    ) -> None:
        self._children_lane = asyncio.Semaphore(children_concurrency)
        self._status_lane = asyncio.Semaphore(status_concurrency)
        # One more for the leader Lease, which must never wait behind applies.
        self._connections = children_concurrency + status_concurrency + 1
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._headers: dict[str, str] = {}
        self._ssl: ssl.SSLContext | bool = True
        self._proxy: str | None = None
        self._connected = asyncio.Event()
        # Logs in afresh (a rotated ServiceAccount token): after a 401, as kopf does itself.
        self._relogin: Callable[[], kopf.ConnectionInfo | None] | None = None
        # (kind, namespace, name) -> (digest of the manifest last applied, the object's
        # revision right after, see builders.get_child_revision): lets a steady resource skip
        # its applies, and only while nobody has changed the object since.
        self._applied: dict[tuple[str, str, str], tuple[str, str]] = {}
        # (kind, namespace, name) -> (the uid of its controller, "" for none; its own uid), of
        # the children the watch shows (`seen`) and those aliasop wrote: an object known to be
        # its resource's is written without asking the API server whose it is.
        self._holders: dict[tuple[str, str, str], tuple[str, str]] = {}
        # Children a claim found absent: the apply that follows it creates them without
        # asking the API server again (see `claim`).
        self._claimed_absent: set[tuple[str, str, str]] = set()
        # Raises NotLeading unless this replica may write (leader.LeaderElector.fence);
        # None: it always may.
        self.fence: Callable[[], None] | None = None
        # Applies in flight: status writes wait until there are none.
        self._applying = 0
        self._nothing_applying = asyncio.Event()
        self._nothing_applying.set()

    def connect(
        self,
        info: kopf.ConnectionInfo,
        relogin: Callable[[], kopf.ConnectionInfo | None] | None = None,
    ) -> None:
        """Use these credentials from now on: at kopf's login, and again at each re-login.
        `relogin` gets fresh ones when the API server answers 401 (an expired token)."""
        if relogin is not None:
            self._relogin = relogin
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections)
            )
        self._server = info.server.rstrip("/")
        self._headers = {**info.as_http_headers(), "User-Agent": FIELD_MANAGER}
        self._ssl = info.as_ssl_context()
        self._proxy = info.proxy_url
        self._connected.set()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def apply(
        self,
        manifest: dict[str, Any],
        current_revision: str | None,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        """Server-side apply as field manager `aliasop`: fields others own are left alone.

        Skipped when this manifest was applied last and the object is still as that apply
        left it: `current_revision` is its revision as last watched (None: there is none).
        Applies as another `field_manager` are never skipped nor remembered."""
        meta = manifest["metadata"]
        key = _key(manifest)
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        remembered = field_manager == FIELD_MANAGER
        as_left = current_revision is not None and self._applied.get(key) == (
            digest,
            current_revision,
        )
        if remembered and as_left:
            return
        uid = await self._own(manifest, handover=True)
        # The uid checked is a precondition: should the object have been replaced since (by
        # the time the watch says so), the API server refuses the apply (409).
        body = {**manifest, "metadata": {**meta, "uid": uid}} if uid else manifest
        # force: the fields of an object this resource controls are aliasop's, whoever
        # edited them since.
        path = f"{self._path(manifest)}?fieldManager={field_manager}&force=true"
        self._applying += 1
        self._nothing_applying.clear()
        try:
            async with self._children_lane:
                applied = json.loads(await self._send("PATCH", path, body, _APPLY))
        except ApiError:
            self._holders.pop(key, None)  # asked afresh next time
            raise
        finally:
            self._applying -= 1
            if not self._applying:
                self._nothing_applying.set()
        if remembered:
            self._applied[key] = (digest, get_child_revision(applied))
        # Applied with its controller reference, which the API server keeps unique: ours.
        self._holders[key] = (str(_controller(manifest)["uid"]), _uid(applied))

    async def delete(self, manifest: dict[str, Any]) -> None:
        """Delete the object `manifest` names at once (its dependents, such as a Service's
        EndpointSlices, follow in the background) if its controller is the manifest's; a 404
        is fine, it is gone already. Raises NameClash for an object another controls, or
        none: a handover lets aliasop apply an object, never delete one it does not control.
        The delete names the uid it checked, so the API server refuses it (409) should the
        object have been replaced meanwhile."""
        meta = manifest["metadata"]
        key = _key(manifest)
        uid = await self._own(manifest, handover=False)
        self._applied.pop(key, None)
        if uid is None:
            return  # gone already
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            async with self._children_lane:
                await self._send("DELETE", self._path(manifest), body, "application/json")
        except ApiError as exc:
            if exc.missing != (_PLURALS[manifest["kind"]], meta["name"]):
                raise
        self._holders.pop(key, None)

    async def claim(self, manifest: dict[str, Any]) -> None:
        """Raises NameClash unless the object `manifest` names is absent, controlled by the
        manifest's controller, or handed over to it (ADOPT_ANNOTATION). An absent one is
        remembered for the next apply or delete of it, which then asks nothing again."""
        key = _key(manifest)
        self._claimed_absent.discard(key)  # a claim always asks afresh
        if await self._own(manifest, handover=True) is None:
            self._claimed_absent.add(key)

    def seen(self, child: Mapping[str, Any], deleted: bool) -> None:
        """A child as the watch shows it (or deleted): whose it is, so that applies to what
        is known to be the applying resource's ask the API server nothing."""
        key = _key(child)
        if deleted:
            self._holders.pop(key, None)
        else:
            self._holders[key] = _holder(child)
            self._claimed_absent.discard(key)  # made since the claim: ask

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is remembered of the children of a resource no longer followed."""
        names = {name, *(child_name(Owner(name, namespace, ""), s) for s in SUFFIXES)}
        for kind in _PLURALS:
            for child in names:
                self._applied.pop((kind, namespace, child), None)
                self._claimed_absent.discard((kind, namespace, child))

    async def _own(self, manifest: dict[str, Any], handover: bool) -> str | None:
        """The uid of the object `manifest` names when its controller is the manifest's (or,
        with `handover`, when it has none and ADOPT_ANNOTATION names the manifest's
        controller); None when there is no such object. Raises NameClash for any other. The
        API server is asked only when the object is not known to be the manifest
        controller's (see `seen`)."""
        kind, meta = manifest["kind"], manifest["metadata"]
        key = _key(manifest)
        if key in self._claimed_absent:
            self._claimed_absent.discard(key)
            return None
        owner = _controller(manifest)
        known = self._holders.get(key)
        if known is not None and known[0] == owner["uid"]:
            return known[1]
        found = await self._get(manifest)
        if found is None:
            self._holders.pop(key, None)
            return None
        holder = get_controller(found)
        if holder is not None and holder.get("uid") == owner["uid"]:
            self._holders[key] = _holder(found)
            return _uid(found)
        annotations = found["metadata"].get("annotations") or {}
        if handover and holder is None and annotations.get(ADOPT_ANNOTATION) == owner["name"]:
            return _uid(found)
        held_by = f"{holder.get('kind')} {holder.get('name')}" if holder is not None else ""
        raise NameClash(kind, meta["name"], held_by, str(owner["name"]))

    async def _get(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The object `manifest` names, as the API server has it now; None when absent."""
        try:
            found = await self._send("GET", self._path(manifest), None, fenced=False)
        except ApiError as exc:
            if exc.missing == (_PLURALS[manifest["kind"]], manifest["metadata"]["name"]):
                return None
            raise
        return dict(json.loads(found))

    @staticmethod
    def _path(manifest: dict[str, Any]) -> str:
        """The API path of the object `manifest` names."""
        meta, group_version = manifest["metadata"], manifest["apiVersion"]
        root = "/api" if "/" not in group_version else "/apis"
        plural = _PLURALS[manifest["kind"]]
        return f"{root}/{group_version}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> str | None:
        """Merge-patch the status subresource, once no apply is in flight; None values
        remove fields. With `resource_version`, the API server refuses the write (409) when
        the object has changed since. Returns the resourceVersion the write stored."""
        await self._nothing_applying.wait()
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        patch: dict[str, Any] = {"status": status}
        if resource_version is not None:
            patch["metadata"] = {"resourceVersion": resource_version}
        async with self._status_lane:
            stored = await self._send("PATCH", path, patch, _MERGE)
        version = (json.loads(stored or b"{}").get("metadata") or {}).get("resourceVersion")
        return str(version) if version is not None else None

    async def read_resource(self, namespace: str, name: str) -> dict[str, Any]:
        """The ModelDeployment as the API server has it now (a 404 raises ApiError)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        async with self._status_lane:
            return dict(json.loads(await self._send("GET", path, None, fenced=False)))

    async def post_event(
        self,
        involved: Mapping[str, Any],
        kind: str,
        reason: str,
        message: str,
        at: datetime.datetime,
    ) -> None:
        """Post a core/v1 Event (`kind`: Normal or Warning) about `involved`, an object's
        apiVersion, kind and metadata; in the same lane as status writes."""
        meta = involved["metadata"]
        stamp = rfc3339(at)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:_EVENT_MESSAGE_LIMIT],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
        }
        path = f"/api/v1/namespaces/{meta['namespace']}/events"
        async with self._status_lane:
            await self._send("POST", path, event, "application/json")

    # --- the leader Lease (leader.Leases): never fenced, never queued behind other calls ---

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            path = f"{_leases_path(namespace)}/{name}"
            lease = await self._send("GET", path, None, fenced=False)
        except ApiError as exc:
            if exc.missing == ("leases", name):
                return None
            raise
        return dict(json.loads(lease))

    async def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        stored = await self._send("POST", _leases_path(namespace), lease, fenced=False)
        return dict(json.loads(stored))

    async def replace_lease(
        self, namespace: str, name: str, lease: dict[str, Any]
    ) -> dict[str, Any]:
        path = f"{_leases_path(namespace)}/{name}"
        return dict(json.loads(await self._send("PUT", path, lease, fenced=False)))

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        content_type: str = "application/json",
        fenced: bool = True,
    ) -> bytes:
        """Send a request and return the response body; an error status raises ApiError, no
        answer ApiUnreachable (a timeout: TimeoutError). A 401 logs in afresh and tries again,
        once per call (also after a 429: the token may expire while it waits); a 429 waits as
        Retry-After says (bounded), a few times. `fenced`: a write that only the leader may
        send (the fence is checked right before each attempt)."""
        relogged, waits = False, 0
        while True:
            if fenced and self.fence is not None:
                self.fence()
            status, reason, payload, retry_after = await self._send_once(
                method, path, body, content_type
            )
            if status == 401 and not relogged and self._relogin is not None:
                relogged = True
                _log.info("the API server refused the credentials (401): logging in afresh")
                info = self._relogin()
                if info is not None:
                    self.connect(info)
                    continue
            if status == 429 and waits < _WAITS:
                waits += 1
                await asyncio.sleep(retry_after)
                continue
            if status >= 400:
                raise _api_error(status, reason, payload)
            return payload

    async def _send_once(
        self, method: str, path: str, body: dict[str, Any] | None, content_type: str
    ) -> tuple[int, str, bytes, float]:
        """One request: its status, reason, body and how long Retry-After asks to wait."""
        await self._connected.wait()  # kopf logs in before it starts any handler
        assert self._session is not None
        try:
            async with self._session.request(
                method,
                self._server + path,
                data=None if body is None else json.dumps(body),
                headers={**self._headers, "Content-Type": content_type},
                ssl=self._ssl,
                proxy=self._proxy,
                timeout=self._timeout,
            ) as response:
                payload = await response.read()
        except TimeoutError:
            raise TimeoutError(f"no answer within {self._timeout.total:g}s") from None
        except aiohttp.ClientError as exc:
            raise ApiUnreachable(f"{type(exc).__name__}: {exc}") from exc
        retry_after = _seconds(response.headers.get("Retry-After"))
        return response.status, response.reason or "", payload, retry_after


def _controller(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """The controller reference of a manifest aliasop writes: every child names its
    ModelDeployment (builders), so one that does not is a bug, not a clash."""
    reference = get_controller(manifest)
    if reference is None:
        name = manifest["metadata"]["name"]
        raise ValueError(f"the manifest of the {manifest['kind']} {name} names no controller")
    return reference


def _holder(child: Mapping[str, Any]) -> tuple[str, str]:
    """The uid of `child`'s controller ("" for none) and its own."""
    controller = get_controller(child)
    return (str(controller.get("uid")) if controller is not None else "", _uid(child))


def _uid(found: Mapping[str, Any]) -> str:
    return str((found.get("metadata") or {}).get("uid") or "")


def _leases_path(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def _key(manifest: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name) of the object `manifest` names."""
    meta = manifest["metadata"]
    return (str(manifest["kind"]), str(meta["namespace"]), str(meta["name"]))
