"""One reconciliation pass per tracked ModelDeployment: resolve -> decide -> apply -> report.

kopf is the watch: it tells `Reconciler.resource_seen` about every ModelDeployment event. The
scheduler runs `Reconciler.run_pass` for each tracked resource, after `pollIntervalSeconds`
or sooner when woken. Everything a pass does goes through small interfaces
(aliasop.interfaces and the clock), so that each of its paths is tested in-process on fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from aliasop import analysis, challenger, grants, metrics
from aliasop.analysis_models import AnalysisStep
from aliasop.builders import (
    SUFFIXES,
    ServingDefaults,
    get_child_revision,
    get_owner_name,
    get_selector,
    get_tracking_uri,
    with_version_url,
)
from aliasop.clock import Clock
from aliasop.deployments import ObservedDeployment, observe_deployment
from aliasop.domain import CANARY, CHALLENGER, Owner, Requests
from aliasop.events import EventType
from aliasop.grants import RevertOutcome, RevertResult, WriteGrants
from aliasop.interfaces import (
    ApiError,
    Children,
    MetricProvider,
    ModelKey,
    NameClash,
    RegistryWrites,
    ReleaseFacts,
    Reporter,
    Resolver,
    ResourceKey,
)
from aliasop.models import (
    ABORT_ANNOTATION,
    PLURAL,
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    REQUEST_ANNOTATIONS,
    RETRY_ANNOTATION,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelUri,
    RegistryProblem,
    ResolvedVersion,
    SignaturePolicy,
)
from aliasop.plan import Apply, SeenChildren, plan_pass
from aliasop.rollout import (
    Decision,
    Gates,
    TagWrite,
    api_failing,
    decide,
    invalid_spec,
    name_clash,
    needs,
    record_key,
    refused,
    state_of,
    status_to_store,
    unapproved_tags,
)
from aliasop.scheduler import Scheduler
from aliasop.sharding import shard_labels
from aliasop.signatures import compare
from aliasop.templating import TemplateContext

Logger = logging.Logger | logging.LoggerAdapter[Any]

# What a pass retries: the API server refused or did not answer (OSError covers timeouts).
RETRIED = (ApiError, OSError)
FAILURES_BEFORE_REPORT = 3  # a blip is retried quietly; a third failure in a row is shown
_SOONEST = 0.5  # seconds: the least a pass waits for a pause's end or a measurement
_INVALID = (400, 422)  # the API server refuses the object itself: retrying cannot help
_CONFLICT = 409  # a status write over a resourceVersion that is no longer the object's
_CONFLICTS_RETRIED = 2  # in one pass; then the scheduler's next pass tries again soon


@dataclass
class Tracked:
    """What is kept of a tracked ModelDeployment between its passes."""

    # apiVersion, kind, metadata (name, namespace, uid, generation) and spec as last watched:
    # not the whole object, whose managedFields alone are a few kilobytes.
    resource: dict[str, Any]
    # The status as the API server has it: from the newest watch event, or from this
    # operator's last status write, whichever is newer (see `status_version`).
    status: ModelDeploymentStatus
    logger: Logger
    # The resourceVersion `status` was read at or written as. A watch event no newer than it
    # (the echo of an earlier write, which the watch shows only later) changes nothing, and
    # the next status write is refused (409) when the object has moved on since.
    status_version: str | None = None
    # Read the object afresh before the next pass: this replica has just become the leader
    # (the watch may lag behind what the last one wrote), or a status write was refused.
    stale: bool = False
    # The first pass writes its status even when only lastResolvedTime moved: it shows that
    # this operator instance has taken the resource over.
    refresh_seconds: float = 0.0
    failures: int = 0  # passes in a row that failed on the Kubernetes API

    @property
    def uid(self) -> str:
        return str(self.resource["metadata"]["uid"])

    @property
    def generation(self) -> int:
        return int(self.resource["metadata"].get("generation") or 0)


class Tracker:
    """What "this resource is tracked" means, in one place: its stored state, its scheduler
    entry, its resolver watch and what the children client remembers of its applies. Each
    is added by `track` and removed by `untrack`, together."""

    def __init__(self, scheduler: Scheduler[ResourceKey], resolver: Resolver, children: Children):
        self._scheduler = scheduler
        self._resolver = resolver
        self._children = children
        self._tracked: dict[ResourceKey, Tracked] = {}

    def track(self, key: ResourceKey, tracked: Tracked) -> None:
        """Track `key` from now on; its first pass runs at once."""
        self.untrack(key)
        self._tracked[key] = tracked
        self._scheduler.add(key)
        metrics.WATCHED.set(len(self._tracked))

    def untrack(self, key: ResourceKey) -> None:
        """Forget `key` entirely; its pass in flight, if any, is cancelled (unless it is the
        caller). Untracking what is not tracked does nothing."""
        if self._tracked.pop(key, None) is None:
            return
        self._scheduler.drop(key)
        self._resolver.unwatch(key)
        self._children.forget(*key)
        metrics.forget_resource(key)
        metrics.WATCHED.set(len(self._tracked))

    def watch_model(self, key: ResourceKey, model: ModelKey, interval: float) -> None:
        """Have the resolver watch `model` for `key`, as long as `key` is tracked."""
        if key in self._tracked:
            self._resolver.watch(key, model, interval)

    def wake(self, key: ResourceKey) -> None:
        """Pass now (or right after the pass in flight); untracked keys are ignored."""
        self._scheduler.wake(key)

    def get(self, key: ResourceKey) -> Tracked | None:
        return self._tracked.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._tracked

    def __iter__(self) -> Iterator[ResourceKey]:
        return iter(list(self._tracked))

    def __len__(self) -> int:
        return len(self._tracked)


class ObservedChildren:
    """The children as their watch last showed them, by owner and name suffix ("" for the
    resource's own, "canary" for <name>-canary ...): what passes read instead of asking the
    API server (only what decisions and the apply cache need, to keep memory flat at many
    resources)."""

    def __init__(self) -> None:
        self._deployments: dict[tuple[ResourceKey, str], ObservedDeployment] = {}
        # (kind, owner, suffix) -> the revision of a Service or PodDisruptionBudget
        self._revisions: dict[tuple[str, ResourceKey, str], str] = {}

    def seen(self, owner: ResourceKey, child: Mapping[str, Any], deleted: bool) -> None:
        """`child` (a Deployment, Service or PodDisruptionBudget) as watched, or deleted."""
        kind, name = str(child["kind"]), str(child["metadata"]["name"])
        suffix = "" if name == owner[1] else name.removeprefix(f"{owner[1]}-")
        if kind == "Deployment":
            if deleted:
                self._deployments.pop((owner, suffix), None)
            else:
                self._deployments[owner, suffix] = observe_deployment(child)
        elif deleted:
            self._revisions.pop((kind, owner, suffix), None)
        else:
            self._revisions[kind, owner, suffix] = get_child_revision(child)

    def of(self, owner: ResourceKey) -> SeenChildren:
        """Every child of `owner`, as a pass plans from them."""
        sides = {v: self._deployments.get((owner, v)) for v in (CANARY, CHALLENGER)}
        services = {s: self._revisions.get(("Service", owner, s)) for s in ("", *SUFFIXES)}
        return SeenChildren(
            main=self._deployments.get((owner, "")),
            sides={v: seen for v, seen in sides.items() if seen is not None},
            services={s: rev for s, rev in services.items() if rev is not None},
            budget=self._revisions.get(("PodDisruptionBudget", owner, "")),
        )


class Reconciler:
    def __init__(
        self,
        tracker: Tracker,
        resolver: Resolver,
        facts: ReleaseFacts,
        children: Children,
        reporter: Reporter,
        clock: Clock,
        defaults: ServingDefaults,
        *,
        measurer: MetricProvider,
        writes: RegistryWrites | None = None,
        concurrency: int,
        status_refresh_seconds: float,
        retry_backoff_max_seconds: float,
        shard_label_keys: frozenset[str] = frozenset(),
        write_grants: WriteGrants | None = None,
    ) -> None:
        self.tracker = tracker
        self._resolver = resolver
        self._facts = facts
        self._measurer = measurer  # of canary analyses
        self._writes = writes  # None: the registry is not told what serves
        # Which namespaces' resources may write to which models (grants.may_write).
        self._write_grants: WriteGrants = write_grants or {}
        self._background: set[asyncio.Task[None]] = set()
        self._children = children
        self._reporter = reporter
        self._clock = clock
        self.observed = ObservedChildren()
        self._defaults = defaults
        # Passes resolving, deciding and applying at once: more than the API calls in flight
        # would only queue, each holding its copies of spec and status (the peak after a
        # restart, or a webhook for a model many resources follow). Reporting is outside.
        self._slots = asyncio.Semaphore(concurrency)
        self._status_refresh_seconds = status_refresh_seconds
        self._retry_backoff_max_seconds = retry_backoff_max_seconds
        # Labels of a resource its children carry: those the shard's selector names.
        self._shard_label_keys = shard_label_keys

    # --- what the watch shows ---------------------------------------------------------------

    def resource_seen(self, body: Mapping[str, Any], deleted: bool, logger: Logger) -> None:
        """A watch event of a ModelDeployment (kopf lists them all at start). A new resource
        is tracked and passes at once; one deleted is untracked; one deleted and created anew
        under its name (another uid) starts afresh; a new generation (a spec change) passes
        at once. The status held is refreshed from every event newer than it, on a standby
        too: the API server's is the truth, whoever wrote it. Most events are our own status
        writes: they change nothing here."""
        meta = body["metadata"]
        key: ResourceKey = (meta["namespace"], meta["name"])
        tracked = self.tracker.get(key)
        gone = deleted or bool(meta.get("deletionTimestamp"))
        if tracked is not None and (gone or tracked.uid != meta["uid"]):
            self._forget_serving(key, tracked)
            self.tracker.untrack(key)
            tracked = None
        if gone:
            return
        identity = _identity(body, self._shard_label_keys)
        version = meta.get("resourceVersion")
        if tracked is None:
            status = _stored_status(body.get("status"), logger)
            self.tracker.track(key, Tracked(identity, status, logger, status_version=version))
            return
        if newer_version(version, tracked.status_version):
            tracked.status = _stored_status(body.get("status"), logger)
            tracked.status_version = version
        if identity["metadata"] != tracked.resource["metadata"]:
            # A new generation (a spec change), or labels the children carry (no generation).
            tracked.resource = identity
            self.tracker.wake(key)

    def child_seen(self, child: Mapping[str, Any], deleted: bool) -> None:
        """A watch event of a Deployment or Service aliasop manages. Its owner passes again:
        rollout progress shows in a Deployment's status, and a child someone deleted or
        edited is put back at once."""
        meta = child["metadata"]
        owner_name = get_owner_name(child)
        if owner_name is None:
            return
        owner: ResourceKey = (meta["namespace"], owner_name)
        self.observed.seen(owner, child, deleted)
        self.tracker.wake(owner)

    def stop(self) -> None:
        for key in self.tracker:
            self.tracker.untrack(key)

    def read_afresh(self) -> None:
        """This replica has become the leader: each tracked resource is read from the API
        server before its next pass, so that it starts from what the last leader wrote."""
        for key in self.tracker:
            tracked = self.tracker.get(key)
            if tracked is not None:
                tracked.stale = True

    # --- one pass -----------------------------------------------------------------------

    async def run_pass(self, key: ResourceKey) -> float:
        """One pass of a tracked resource, and what its failure means; returns the seconds
        until the next one (the scheduler's work)."""
        tracked = self.tracker.get(key)
        if tracked is None:
            return 0.0  # untracked since it was scheduled: the scheduler has dropped it
        try:
            for _ in range(_CONFLICTS_RETRIED + 1):
                if tracked.stale:
                    afresh = await self._reporter.read_resource(*key)
                    tracked.stale = False
                    self.resource_seen(afresh, False, tracked.logger)
                    if self.tracker.get(key) is not tracked:
                        return 0.0  # created anew under its name: tracked (and passing) anew
                base = (tracked.status, tracked.status_version)
                async with self._slots:
                    decision, delay = await self._reconcile(key, tracked, base[0])
                if await self._report(tracked, decision, tracked.refresh_seconds, base):
                    break
                # Another writer changed the object since the status was read: decide again
                # from what it holds now, instead of overwriting what it recorded.
                tracked.stale = True
            else:
                return _SOONEST
        except RETRIED as exc:
            if isinstance(exc, ApiError) and exc.missing == (PLURAL, key[1]):
                # Deleted while the watch was down: kopf lists again after a gap, but reports
                # no deletion for what is missing from the list.
                tracked.logger.warning(f"no longer tracked, the API server has it no more: {exc}")
                self.tracker.untrack(key)
                return 0.0
            return await self._failed(tracked, exc)
        tracked.refresh_seconds = self._status_refresh_seconds
        tracked.failures = 0
        return delay

    async def _reconcile(
        self, key: ResourceKey, tracked: Tracked, stored: ModelDeploymentStatus
    ) -> tuple[Decision, float]:
        """Resolve, decide and apply, from the `stored` status. Returns the decision, whose
        status and Events are still to be reported, and the seconds until the next pass."""
        namespace, name = key
        try:
            spec = ModelDeploymentSpec.model_validate(tracked.resource["spec"])
        except ValidationError as exc:
            # The CRD schema refuses most bad specs; this catches what it cannot express.
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            default = ModelDeploymentSpec.model_fields["poll_interval_seconds"].default
            invalid = invalid_spec(stored, tracked.generation, problems, self._clock.now())
            return invalid, float(default)

        tracking_uri = get_tracking_uri(spec, self._defaults)
        self.tracker.watch_model(
            key, (tracking_uri, spec.model_uri.name), spec.poll_interval_seconds
        )
        resolution = await self._resolve(tracking_uri, spec.model_uri)
        seen = self.observed.of(key)  # the children as this pass decides from them
        observed = seen.main
        resolved = resolution if isinstance(resolution, ResolvedVersion) else None
        asked = _requests(tracked.resource["metadata"]["annotations"])
        wanted = needs(spec, stored, resolved, observed, asked)
        status = await self._measure(key, spec, tracked, stored, wanted.analysis)
        gates = Gates()
        if wanted.candidate is not None:
            try:
                gates = await self._check_gates(
                    spec, tracking_uri, status, wanted.candidate, observed
                )
            except RegistryProblem as problem:
                resolution = problem
        challenger_resolution = None
        if wanted.challenger_alias is not None:
            uri = ModelUri(spec.model_uri.name, wanted.challenger_alias)
            challenger_resolution = await self._resolve(tracking_uri, uri)
        owner = Owner(
            name=name,
            namespace=namespace,
            uid=tracked.uid,
            labels=tracked.resource["metadata"]["labels"],
        )
        now = self._clock.now()
        decision = decide(
            spec,
            tracked.generation,
            status,
            resolution,
            observed,
            now,
            selector=get_selector(owner),
            gates=gates,
            canary_deployment=seen.sides.get(CANARY),
            asked=asked,
            challenger=challenger.plan(
                spec, status.challenger, challenger_resolution, observed, seen.sides.get(CHALLENGER)
            ),
        )
        decision = replace(decision, status=with_version_url(decision.status, spec, self._defaults))
        before, after = state_of(spec, stored), state_of(spec, decision.status)
        if before is not after:
            tracked.logger.info(f"rollout state: {before} -> {after}")
        plan = plan_pass(owner, spec, stored, decision, seen, self._defaults)
        applying = ""  # the child in hand, named if the API server refuses it
        try:
            # Every child is claimed before any is written: a name another object holds
            # stops the pass before it changes anything (Children.claim).
            for step in plan.children.apply:
                await self._children.claim(step.manifest)
            for step in plan.children.apply:
                applying = step.what
                await self._apply(step, tracked)
            for manifest in plan.children.delete:
                applying = str(manifest["kind"])
                await self._children.delete(manifest)
        except NameClash as clash:
            return name_clash(stored, str(clash), now), float(spec.poll_interval_seconds)
        except ApiError as exc:
            if exc.status not in _INVALID:
                raise
            decision = refused(stored, decision, applying, exc.message, now)
        decision = await self._tell_registry(
            key, spec, tracking_uri, tracked, plan.registry_writes, decision
        )
        delay = float(spec.poll_interval_seconds)
        if decision.wake_at is not None:  # a pause ends, a measurement is due
            delay = min(delay, max((decision.wake_at - now).total_seconds(), _SOONEST))
        return decision, delay

    async def _measure(
        self,
        key: ResourceKey,
        spec: ModelDeploymentSpec,
        tracked: Tracked,
        status: ModelDeploymentStatus,
        step: AnalysisStep | None,
    ) -> ModelDeploymentStatus:
        """`status` with the measurements of the canary's analysis `step` that are due now."""
        state = status.canary
        if step is None or state is None or state.analysis is None:
            return status
        measured = state.analysis
        context = TemplateContext(
            version=state.version,
            model=spec.model_uri.name,
            namespace=key[0],
            name=key[1],
            variant=CANARY,
        )
        run = await analysis.advance(step, measured, context, self._measurer, self._clock)
        for result in run.metric_results:
            before = measured.result(result.name)
            taken = result.count + result.errors - (before.count + before.errors if before else 0)
            for measurement in result.measurements[len(result.measurements) - taken :]:
                metrics.MEASUREMENTS.labels(phase=measurement.phase).inc()
                value = measurement.value if measurement.value is not None else measurement.message
                tracked.logger.info(
                    f"analysis of version {state.version}: {measurement.metric} "
                    f"{measurement.phase}: {value}"
                )
        return status.model_copy(update={"canary": state.model_copy(update={"analysis": run})})

    async def _tell_registry(
        self,
        key: ResourceKey,
        spec: ModelDeploymentSpec,
        tracking_uri: str,
        tracked: Tracked,
        writes: Sequence[TagWrite],
        decision: Decision,
    ) -> Decision:
        """Carry out the plan's registry writes: tag the versions this pass changed the fate
        of (where they serve, what was rolled or held back), and move the alias back after a
        rollback if the spec says so and the alias still points at the failed version. Only
        with a write grant for the namespace and model (the RegistryWritesGranted condition
        says). Best effort: the registry's answers do not change what serves."""
        name, namespace = spec.model_uri.name, key[0]
        back_to = decision.revert_alias_to
        if self._writes is None:
            decision = replace(decision, status=grants.scope_forgotten(decision.status))
            return _revert_recorded(spec, decision, RevertResult(RevertOutcome.NO_WRITE_BACK))
        granted = grants.may_write(self._write_grants, namespace, name)
        status, events = grants.scope_reported(
            tracked.status, decision.status, granted, namespace, name, self._clock.now()
        )
        decision = replace(decision, status=status, events=[*decision.events, *events])
        if not granted:
            return _revert_recorded(spec, decision, RevertResult(RevertOutcome.NOT_GRANTED))
        try:
            for write in writes:
                if write.value is None:
                    await self._writes.delete_version_tag(
                        tracking_uri, name, write.version, write.key
                    )
                else:
                    await self._writes.set_version_tag(
                        tracking_uri, name, write.version, write.key, write.value
                    )
        except RegistryProblem as problem:
            tracked.logger.warning(f"the registry was not told: {problem.message}")
            metrics.REGISTRY_WRITE_FAILURES.inc()
        if back_to is None:
            return decision
        alias = spec.model_uri.alias
        try:
            # Read right before writing: a person's move since the failure stands.
            alias_now = await self._writes.alias_version(tracking_uri, name, alias)
            outcome = grants.revert_outcome(alias_now, decision.status.failed_version, back_to)
            if outcome is RevertOutcome.REVERTED:
                await self._writes.set_alias(tracking_uri, name, alias, back_to)
            result = RevertResult(outcome, alias_now)
        except RegistryProblem as problem:
            metrics.REGISTRY_WRITE_FAILURES.inc()
            result = RevertResult(RevertOutcome.REGISTRY_FAILED, problem=problem.message)
        return _revert_recorded(spec, decision, result)

    def _forget_serving(self, key: ResourceKey, tracked: Tracked) -> None:
        """The resource is gone: its serving version no longer serves there (in the
        background: the watch that reports the deletion must not wait for MLflow)."""
        writes, version = self._writes, tracked.status.serving_version
        if writes is None or version is None:
            return
        try:
            spec = ModelDeploymentSpec.model_validate(tracked.resource["spec"])
        except ValidationError:
            return
        if not grants.may_write(self._write_grants, key[0], spec.model_uri.name):
            return
        forget = writes.delete_version_tag(
            get_tracking_uri(spec, self._defaults),
            spec.model_uri.name,
            version,
            record_key("/".join(key)),
        )

        async def quietly() -> None:
            with contextlib.suppress(RegistryProblem):
                await forget

        task = asyncio.create_task(quietly())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _check_gates(
        self,
        spec: ModelDeploymentSpec,
        tracking_uri: str,
        status: ModelDeploymentStatus,
        version: str,
        observed: ObservedDeployment | None,
    ) -> Gates:
        """The release gates of `version`, the one a rollout would start to: its approval
        tags (asked each time: tags change) and its signature against the serving version's
        (cached: versions are immutable)."""
        name = spec.model_uri.name
        unapproved: tuple[str, ...] = ()
        if spec.rollout.required_tags:
            tags = await self._facts.version_tags(tracking_uri, name, version)
            unapproved = unapproved_tags(spec.rollout.required_tags, tags)
        if spec.rollout.signature_policy is SignaturePolicy.IGNORE:
            return Gates(version, unapproved, signature_note="signaturePolicy is Ignore")
        if observed is None:  # nothing serves: no client to break
            return Gates(version, unapproved)
        # Clients call what serves; mid-rollout, what the Deployment rolls to.
        serving_version = status.serving_version or observed.version
        serving, wanted = await asyncio.gather(
            self._facts.signature_inputs(tracking_uri, name, serving_version),
            self._facts.signature_inputs(tracking_uri, name, version),
        )
        comparison = compare(
            serving_version=serving_version,
            serving_inputs=serving,
            candidate_version=version,
            candidate_inputs=wanted,
        )
        return Gates(version, unapproved, comparison.problems, comparison.note, serving_version)

    async def _apply(self, step: Apply, tracked: Tracked) -> None:
        """Apply one child of the plan. A Service edited beyond what an apply can merge (a
        port changed by hand: ports are keyed by number, so the apply adds ours next to it,
        under the same name) is invalid once merged: it is deleted and created anew. One
        handed over but not yet taken is never deleted: the refusal is reported."""
        try:
            await self._children.apply(
                step.manifest,
                current_revision=step.current_revision,
                field_manager=step.field_manager,
            )
        except ApiError as exc:
            if exc.status not in _INVALID or step.manifest["kind"] != "Service":
                raise
            tracked.logger.warning(f"recreating the Service, edited beyond a merge: {exc}")
            try:
                await self._children.delete(step.manifest)
            except NameClash:
                raise exc from None
            await self._children.apply(step.manifest, current_revision=None)

    async def _resolve(self, tracking_uri: str, uri: ModelUri) -> ResolvedVersion | RegistryProblem:
        started = time.perf_counter()
        resolution: ResolvedVersion | RegistryProblem
        try:
            resolution = await self._resolver.resolve(tracking_uri, uri)
            result = "Resolved"
        except RegistryProblem as problem:
            resolution, result = problem, problem.kind.value
        metrics.RESOLUTION_SECONDS.observe(time.perf_counter() - started)
        metrics.RESOLUTIONS.labels(result=result).inc()
        return resolution

    async def _report(
        self,
        tracked: Tracked,
        decision: Decision,
        status_refresh_seconds: float,
        base: tuple[ModelDeploymentStatus, str | None],
    ) -> bool:
        """Write the decided status (when due, see `status_to_store`) over `base` (the status
        the decision started from, and its resourceVersion), and post its Events. False, with
        nothing written nor posted, when the object has changed since `base` was read."""
        meta = tracked.resource["metadata"]
        stored, version = base
        to_store = status_to_store(stored, decision.status, status_refresh_seconds)
        if to_store is not None:
            try:
                written = await self._reporter.patch_status(
                    meta["namespace"],
                    meta["name"],
                    to_store.model_dump(by_alias=True, mode="json"),
                    resource_version=version,
                )
            except ApiError as exc:
                if exc.status != _CONFLICT:
                    raise
                return False
            # The watch shows this write later, after events older than it: keep it till then.
            tracked.status, tracked.status_version = to_store, written
        metrics.observe_resource(
            (meta["namespace"], meta["name"]),
            tracked.resource["spec"].get("model", ""),
            stored,
            decision.status,
        )
        for event in decision.events:
            level = logging.WARNING if event.type is EventType.WARNING else logging.INFO
            tracked.logger.log(level, f"{event.reason}: {event.message}")
            metrics.ROLLOUTS.labels(reason=event.reason).inc()
            try:
                await self._reporter.post_event(
                    tracked.resource, event.type, event.reason, event.message, self._clock.now()
                )
            except RETRIED as exc:  # best effort: status and the log have it already
                tracked.logger.warning(f"Event {event.reason} not posted: {describe(exc)}")
        return True

    async def _failed(self, tracked: Tracked, exc: Exception) -> float:
        """Back off after a Kubernetes API failure; from the third in a row on, show it in
        status and as an Event, not only in the operator's log. Returns the back-off."""
        tracked.failures += 1
        delay = min(2.0**tracked.failures, self._retry_backoff_max_seconds)
        metrics.RECONCILE_ERRORS.inc()
        tracked.logger.warning(f"Kubernetes API error, retrying in {delay:.0f}s: {describe(exc)}")
        if tracked.failures == FAILURES_BEFORE_REPORT:
            decision = api_failing(tracked.status, describe(exc), self._clock.now())
            # Best effort: when the API server itself is what fails, this fails too; and
            # after a conflict, the next pass reads the object afresh and says it then.
            with contextlib.suppress(*RETRIED):
                base = (tracked.status, tracked.status_version)
                if not await self._report(tracked, decision, 0.0, base):
                    tracked.stale = True
        return delay


def newer_version(seen: str | None, held: str | None) -> bool:
    """Whether resourceVersion `seen` is newer than `held`. They are opaque strings to
    clients, but every API server backed by etcd gives integers that only grow: compared as
    such, else any other version is taken as newer."""
    if held is None:
        return True
    if seen is None:
        return False
    if seen.isdigit() and held.isdigit():
        return int(seen) > int(held)
    return seen != held


def describe(exc: Exception) -> str:
    """One line for the log and status."""
    if isinstance(exc, ApiError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _stored_status(stored: Any, logger: Logger) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(dict(stored or {}))
    except ValidationError as exc:  # edited by hand: start afresh, it is rewritten
        logger.warning(f"ignoring a status that does not parse ({exc.error_count()} errors)")
        return ModelDeploymentStatus()


def _requests(annotations: Mapping[str, str]) -> Requests:
    """What a person asks of the rollout, from the resource's annotations."""
    return Requests(
        promote=annotations.get(PROMOTE_ANNOTATION, ""),
        promote_full=annotations.get(PROMOTE_FULL_ANNOTATION, ""),
        abort=annotations.get(ABORT_ANNOTATION, ""),
        retry=annotations.get(RETRY_ANNOTATION, ""),
    )


def _identity(body: Mapping[str, Any], shard_label_keys: frozenset[str]) -> dict[str, Any]:
    """What passes read of a ModelDeployment, and what Events name it by."""
    meta = body["metadata"]
    identity = {key: meta.get(key) for key in ("name", "namespace", "uid", "generation")}
    annotations = meta.get("annotations") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            **identity,
            "labels": shard_labels(meta.get("labels"), shard_label_keys),
            # A person's request (promote, abort, retry): no new generation, but a pass at once.
            "annotations": {k: v for k, v in annotations.items() if k in REQUEST_ANNOTATIONS},
        },
        "spec": dict(body.get("spec") or {}),
    }


def _revert_recorded(
    spec: ModelDeploymentSpec, decision: Decision, result: RevertResult
) -> Decision:
    """`decision` with the record of what became of its alias revert, if it asked one."""
    if decision.revert_alias_to is None:
        return decision
    status, event = grants.revert_recorded(
        decision.status, spec.model_uri, decision.revert_alias_to, result
    )
    return replace(decision, status=status, events=[*decision.events, event])
