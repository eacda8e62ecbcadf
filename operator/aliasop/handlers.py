"""kopf handlers: thin glue from cluster events to `rollout.decide` and back.

Each ModelDeployment gets a daemon that resolves its alias, decides, applies and reports,
then sleeps for `pollIntervalSeconds` or until something wakes it: a spec change or a change
of its Deployment's status.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
from aliasop.runtime import Runtime
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


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations: status belongs to the ModelDeployment schema.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO
    runtime: Runtime = memo.runtime
    # kopf posts each object's Events from a worker of its own, by default with no limit: a
    # burst of a thousand rollouts would post a thousand Events at once, ahead of the applies.
    settings.posting.worker_limit = runtime.settings.report_concurrency
    # Events are best effort: one the API server keeps refusing (its namespace is being
    # deleted) is dropped after 7 s, instead of holding one of those workers for a minute.
    settings.posting.default_backoffs = (1, 2, 4)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per MLflow request
    if runtime.settings.http_port:
        secret = runtime.settings.webhook_secret.get_secret_value()
        verifier = (
            DeliveryVerifier(secret, runtime.settings.webhook_tolerance_seconds) if secret else None
        )
        memo.http = await serve(build_app(runtime.resolver, verifier), runtime.settings.http_port)
    trim = find_malloc_trim()
    if runtime.settings.memory_trim_seconds and trim is not None:
        memo.trimming = asyncio.create_task(
            trim_periodically(trim, runtime.settings.memory_trim_seconds)
        )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    await runtime.registry.aclose()
    await runtime.cluster.aclose()
    if memo.get("trimming") is not None:
        memo.trimming.cancel()
    if memo.get("http") is not None:
        await memo.http.cleanup()


@kopf.daemon(GROUP, VERSION, PLURAL, id="follow-alias", cancellation_timeout=10)
async def follow_alias(
    body: kopf.Body,
    namespace: str,
    name: str,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    deployments: kopf.Index[tuple[str, str], ObservedDeployment],
    logger: kopf.Logger,
    **_: Any,
) -> None:
    runtime: Runtime = memo.runtime
    wakeup = runtime.wakeups.register(namespace, name)
    metrics.WATCHED.set(len(runtime.wakeups))
    # Read once: kopf's body catches up with our own status writes only later, so from here on
    # the status this loop last wrote is the truth.
    status = ModelDeploymentStatus.model_validate(dict(body.get("status") or {}))
    # The first pass writes its status even when only lastResolvedTime moved: it shows that
    # this operator instance has taken the resource over.
    refresh_seconds = 0.0
    failures = 0
    try:
        while not stopped:
            wakeup.clear()
            try:
                status, delay = await _pass(
                    runtime, body, status, deployments, logger, refresh_seconds
                )
                refresh_seconds, failures = runtime.settings.status_refresh_seconds, 0
            except _TRANSIENT as exc:
                failures += 1
                delay = min(2.0**failures, runtime.settings.retry_backoff_max_seconds)
                metrics.RECONCILE_ERRORS.inc()
                logger.warning(f"Kubernetes API error, retrying in {delay:.0f}s: {_describe(exc)}")
                if failures == _FAILURES_BEFORE_REPORT:
                    status = await _report_api_failing(runtime, body, status, exc, logger)
            await _sleep(delay, wakeup, stopped)
    finally:
        runtime.resolver.unfollow((namespace, name))
        runtime.cluster.forget(namespace, name)
        runtime.wakeups.unregister(namespace, name)
        metrics.WATCHED.set(len(runtime.wakeups))


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def spec_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.wakeups.wake(namespace, name)


@kopf.index("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "aliasop"})
async def deployments(
    namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> dict[tuple[str, str], ObservedDeployment]:
    """The children Deployments as the watch last saw them (only what decisions read, to keep
    memory flat at many resources), so passes need not read them. Rollout progress shows in
    their status: each change wakes the owner's loop. (Async, so that it runs on the event
    loop: waking an asyncio.Event from a thread is unsafe.)"""
    memo.runtime.wakeups.wake(namespace, name)  # a Deployment is named after its owner
    return {(namespace, name): observe_deployment(body)}


async def _pass(
    runtime: Runtime,
    body: kopf.Body,
    status: ModelDeploymentStatus,
    deployments: kopf.Index[tuple[str, str], ObservedDeployment],
    logger: kopf.Logger,
    refresh_seconds: float,
) -> tuple[ModelDeploymentStatus, float]:
    """Reconcile and report; returns the status stored and the seconds until the next pass.
    (A function of its own so that nothing of the pass outlives it while the loop sleeps: a
    thousand sleeping loops would each keep a decision.)"""
    meta = body["metadata"]
    async with runtime.passes:
        observed = next(iter(deployments.get((meta["namespace"], meta["name"]), [])), None)
        decision, delay = await reconcile(runtime, body, status, observed)
    # Reported outside the slot: other resources' applies need not wait for it.
    return await _report(runtime, body, status, decision, logger, refresh_seconds), delay


async def reconcile(
    runtime: Runtime,
    body: kopf.Body,
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
    runtime: Runtime,
    body: kopf.Body,
    status: ModelDeploymentStatus,
    decision: Decision,
    logger: kopf.Logger,
    status_refresh_seconds: float = 0.0,
) -> ModelDeploymentStatus:
    """Write the decided status (when due, see `status_to_store`) and post its Events;
    returns the status stored."""
    to_store = status_to_store(status, decision.status, status_refresh_seconds)
    if to_store is not None:
        await runtime.cluster.patch_status(
            body["metadata"]["namespace"],
            body["metadata"]["name"],
            to_store.model_dump(by_alias=True, mode="json"),
        )
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        logger.log(level, f"{event.reason}: {event.message}")
        metrics.ROLLOUTS.labels(reason=event.reason).inc()
    return to_store if to_store is not None else status


async def _report_api_failing(
    runtime: Runtime,
    body: kopf.Body,
    status: ModelDeploymentStatus,
    exc: Exception,
    logger: kopf.Logger,
) -> ModelDeploymentStatus:
    """Show persistent API errors in status and as an Event, not only in the operator's
    log. Best effort: when the API server itself is what fails, this fails too."""
    decision = api_failing(status, _describe(exc), runtime.clock.now())
    try:
        return await _report(runtime, body, status, decision, logger)
    except _TRANSIENT:
        return status


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


async def _sleep(seconds: float, wakeup: asyncio.Event, stopped: kopf.DaemonStopped) -> None:
    """Sleep until the timeout, a wake-up or the daemon being stopped, whichever is first."""
    waits = {asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
