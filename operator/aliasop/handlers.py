"""kopf handlers: thin glue from cluster events to `rollout.decide` and back.

Each ModelDeployment the watch shows is followed: a pass resolves its alias, decides, applies
and reports, and the next one comes after `pollIntervalSeconds` or sooner when something
wakes it: a spec change, a change of its Deployment, or of the aliases of its model. The
scheduler (aliasop.scheduler) runs the passes; between them a resource costs a timer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf
from pydantic import ValidationError

from aliasop import metrics
from aliasop.builders import Owner, get_deployment, get_service, get_tracking_uri
from aliasop.endpoints import build_app, serve
from aliasop.kube import ApiError
from aliasop.memory import find_malloc_trim, trim_periodically
from aliasop.models import (
    GROUP,
    PLURAL,
    VERSION,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    RegistryProblem,
    ResolvedVersion,
)
from aliasop.rollout import (
    Decision,
    Event,
    ObservedDeployment,
    api_failing,
    decide,
    observe_deployment,
    refused,
    status_to_store,
)
from aliasop.runtime import Followed, Runtime
from aliasop.watcher import Follower
from aliasop.webhooks import DeliveryVerifier

_TRANSIENT = (ApiError, aiohttp.ClientError, OSError)  # OSError covers timeouts
_FAILURES_BEFORE_REPORT = 3  # a blip is retried quietly; a third failure in a row is shown


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account, else the kubeconfig ($KUBECONFIG or ~/.kube/config); kopf
    and aliasop's own calls (kube.Cluster) share these credentials, renewed at each re-login."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        memo.runtime.cluster.connect(info)
    return info


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf deep-copies each watched object at each event to diff it for change handlers;
    there are none here (only event and index handlers), so there is nothing to diff."""

    def build(self, **_: Any) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, **_: Any) -> None:
        return None

    def store(self, **_: Any) -> None:
        pass


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    settings.persistence.diffbase_storage = _NoDiffBase()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per MLflow request
    logging.getLogger("kopf.objects").addFilter(_not_event_handled)
    if runtime.settings.http_port:
        secret = runtime.settings.webhook_secret.get_secret_value()
        verifier = (
            DeliveryVerifier(secret, runtime.settings.webhook_tolerance_seconds) if secret else None
        )
        memo.http = await serve(build_app(runtime.resolver, verifier), runtime.settings.http_port)
    runtime.scheduler.start(functools.partial(follow, runtime))
    trim = find_malloc_trim()
    if runtime.settings.memory_trim_seconds and trim is not None:
        memo.trimming = asyncio.create_task(
            trim_periodically(trim, runtime.settings.memory_trim_seconds)
        )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    runtime.scheduler.stop()
    for key in list(runtime.followed):
        _unfollow(runtime, key)  # the watcher's polls too
    await runtime.registry.aclose()
    await runtime.cluster.aclose()
    if memo.get("trimming") is not None:
        memo.trimming.cancel()
    if memo.get("http") is not None:
        await memo.http.cleanup()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def modeldeployment_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    deployments: kopf.Index[Follower, ObservedDeployment],
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Follow every ModelDeployment the watch shows (kopf lists them all at start); a new
    generation (a spec change) passes at once. No finalizer: the children are the owner's
    (ownerReferences), so deleting a ModelDeployment never waits for the operator."""
    runtime: Runtime = memo.runtime
    runtime.deployments = deployments  # the same index every time
    key = (namespace, name)
    followed = runtime.followed.get(key)
    gone = event["type"] == "DELETED" or bool(body.meta.get("deletionTimestamp"))
    if followed is not None and (gone or followed.body["metadata"]["uid"] != body.meta.uid):
        _unfollow(runtime, key)  # deleted, or deleted and created anew under the same name
        followed = None
    if gone:
        return
    if followed is None:
        status = _stored_status(body, logger)
        runtime.followed[key] = Followed(body=_identity(body), status=status, logger=logger)
        runtime.scheduler.follow(key)
        metrics.WATCHED.set(len(runtime.followed))
    elif body.meta.get("generation") != followed.body["metadata"]["generation"]:
        # Most events are our own status writes: the spec is copied only when it changed.
        followed.body = _identity(body)
        runtime.scheduler.wake(key)


def _not_event_handled(record: logging.LogRecord) -> bool:
    """kopf logs each run of an event handler that succeeds: one line for every watch event
    of every ModelDeployment, our own status writes included."""
    return record.msg != "Handler 'modeldeployment_event' succeeded."


def _stored_status(body: kopf.Body, logger: kopf.Logger) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(dict(body.get("status") or {}))
    except ValidationError as exc:  # edited by hand: start afresh, it is rewritten
        logger.warning(f"ignoring a status that does not parse ({exc.error_count()} errors)")
        return ModelDeploymentStatus()


def _identity(body: kopf.Body) -> dict[str, Any]:
    """What passes read of a ModelDeployment, and what Events name it by."""
    meta = body.meta
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {key: meta.get(key) for key in ("name", "namespace", "uid", "generation")},
        "spec": dict(body.spec),
    }


def _unfollow(runtime: Runtime, key: Follower) -> None:
    runtime.scheduler.drop(key)
    runtime.resolver.unfollow(key)
    runtime.cluster.forget(*key)
    del runtime.followed[key]
    metrics.WATCHED.set(len(runtime.followed))


async def follow(runtime: Runtime, key: Follower) -> float:
    """One pass of a followed resource, with its retries; returns the seconds until the next
    one. (The scheduler's work: it runs this again when the time is up or a wake-up comes.)"""
    followed = runtime.followed[key]  # followed and scheduled together, dropped together
    try:
        followed.status, delay = await _pass(runtime, followed)
        followed.refresh_seconds = runtime.settings.status_refresh_seconds
        followed.failures = 0
    except _TRANSIENT as exc:
        if isinstance(exc, ApiError) and exc.status == 404:
            # Deleted while the watch was down: kopf lists again after a gap, but reports no
            # deletion for what is missing from the list.
            followed.logger.warning(f"no longer followed, the API server has it no more: {exc}")
            _unfollow(runtime, key)
            return 0.0
        followed.failures += 1
        delay = min(2.0**followed.failures, runtime.settings.retry_backoff_max_seconds)
        metrics.RECONCILE_ERRORS.inc()
        followed.logger.warning(f"Kubernetes API error, retrying in {delay:.0f}s: {_describe(exc)}")
        if followed.failures == _FAILURES_BEFORE_REPORT:
            followed.status = await _report_api_failing(runtime, followed, exc)
    return delay


@kopf.index("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "aliasop"})
async def deployments(
    namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> dict[tuple[str, str], ObservedDeployment]:
    """The children Deployments as the watch last saw them (only what decisions read, to keep
    memory flat at many resources), so passes need not read them. Rollout progress shows in
    their status: each change wakes the owner. (Async, so that it runs on the event loop:
    the scheduler's timers are not thread-safe.)"""
    memo.runtime.scheduler.wake((namespace, name))  # a Deployment is named after its owner
    return {(namespace, name): observe_deployment(body)}


async def _pass(runtime: Runtime, followed: Followed) -> tuple[ModelDeploymentStatus, float]:
    """Reconcile and report; returns the status stored and the seconds until the next pass."""
    meta = followed.body["metadata"]
    async with runtime.passes:
        observed = runtime.observed((meta["namespace"], meta["name"]))
        decision, delay = await reconcile(runtime, followed.body, followed.status, observed)
    # Reported outside the slot: other resources' applies need not wait for it.
    stored = await _report(runtime, followed, decision, followed.refresh_seconds)
    return stored, delay


async def reconcile(
    runtime: Runtime,
    body: Mapping[str, Any],
    status: ModelDeploymentStatus,
    observed: ObservedDeployment | None,
) -> tuple[Decision, float]:
    """One pass: resolve, look at `observed` (the child Deployment, None if there is none
    yet), decide and apply. Returns the decision, whose status and Events are still to be
    reported, and the seconds until the next pass."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        spec = ModelDeploymentSpec.model_validate(dict(body["spec"]))
    except ValidationError as exc:
        # The CRD schema refuses most bad specs; this catches what it cannot express.
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        invalid = status.model_copy(
            update={"phase": Phase.DEGRADED, "message": f"invalid spec: {problems}"}
        )
        new = invalid.message != status.message  # report once, not every pass
        events = [Event("Warning", "InvalidSpec", problems)] if new else []
        default_interval = ModelDeploymentSpec.model_fields["poll_interval_seconds"].default
        return Decision(status=invalid, pin=None, events=events), float(default_interval)

    tracking_uri = get_tracking_uri(spec, runtime.defaults)
    runtime.resolver.follow(
        (namespace, name), (tracking_uri, spec.model_uri.name), spec.poll_interval_seconds
    )
    resolution = await _resolve(runtime, tracking_uri, spec)
    decision = decide(
        spec, meta.get("generation", 0), status, resolution, observed, runtime.clock.now()
    )

    if decision.pin is not None:
        owner = Owner(name=name, namespace=namespace, uid=meta["uid"])
        try:
            await runtime.cluster.apply(
                get_deployment(owner, spec, decision.pin, runtime.defaults),
                current_generation=observed.generation if observed is not None else None,
            )
            await runtime.cluster.apply(get_service(owner, spec))
        except ApiError as exc:
            if exc.status not in (400, 422):  # anything but "invalid" is worth a retry
                raise
            decision = refused(status, decision, exc.message, runtime.clock.now())
    return decision, float(spec.poll_interval_seconds)


async def _report(
    runtime: Runtime, followed: Followed, decision: Decision, status_refresh_seconds: float = 0.0
) -> ModelDeploymentStatus:
    """Write the decided status (when due, see `status_to_store`) and post its Events;
    returns the status stored."""
    meta = followed.body["metadata"]
    to_store = status_to_store(followed.status, decision.status, status_refresh_seconds)
    if to_store is not None:
        await runtime.cluster.patch_status(
            meta["namespace"], meta["name"], to_store.model_dump(by_alias=True, mode="json")
        )
    for event in decision.events:
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        followed.logger.log(level, f"{event.reason}: {event.message}")
        metrics.ROLLOUTS.labels(reason=event.reason).inc()
        try:
            await runtime.cluster.post_event(
                followed.body, event.type, event.reason, event.message, runtime.clock.now()
            )
        except _TRANSIENT as exc:  # best effort: status and the log have it already
            followed.logger.warning(f"Event {event.reason} not posted: {_describe(exc)}")
    return to_store if to_store is not None else followed.status


async def _report_api_failing(
    runtime: Runtime, followed: Followed, exc: Exception
) -> ModelDeploymentStatus:
    """Show persistent API errors in status and as an Event, not only in the operator's
    log. Best effort: when the API server itself is what fails, this fails too."""
    decision = api_failing(followed.status, _describe(exc), runtime.clock.now())
    try:
        return await _report(runtime, followed, decision)
    except _TRANSIENT:
        return followed.status


async def _resolve(
    runtime: Runtime, tracking_uri: str, spec: ModelDeploymentSpec
) -> ResolvedVersion | RegistryProblem:
    started = time.perf_counter()
    try:
        resolution: ResolvedVersion | RegistryProblem = await runtime.resolver.resolve(
            tracking_uri, spec.model_uri
        )
    except RegistryProblem as problem:
        resolution = problem
    metrics.RESOLUTION_SECONDS.observe(time.perf_counter() - started)
    result = resolution.kind.value if isinstance(resolution, RegistryProblem) else "Resolved"
    metrics.RESOLUTIONS.labels(result=result).inc()
    return resolution


def _describe(exc: Exception) -> str:
    """One line for the log and status."""
    if isinstance(exc, ApiError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
