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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from aliasop import analysis, canary, challenger, grants, metrics
from aliasop.builders import (
    CANARY,
    CHALLENGER,
    HANDOVER_FIELD_MANAGER,
    MAIN,
    Owner,
    PinnedVersion,
    ServingDefaults,
    Side,
    get_child_revision,
    get_deployment,
    get_disruption_budget,
    get_owner_name,
    get_replicas_handover,
    get_selector,
    get_service,
    get_tracking_uri,
    service_suffix,
    with_version_url,
)
from aliasop.clock import Clock
from aliasop.deployments import ObservedDeployment, observe_deployment
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
    PLURAL,
    PROMOTE_ANNOTATION,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelUri,
    RegistryProblem,
    ResolvedVersion,
    SignaturePolicy,
)
from aliasop.rollout import (
    Decision,
    Gates,
    api_failing,
    candidate,
    decide,
    invalid_spec,
    name_clash,
    record_key,
    refused,
    registry_records,
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


@dataclass
class Tracked:
    """What is kept of a tracked ModelDeployment between its passes."""

    # apiVersion, kind, metadata (name, namespace, uid, generation) and spec as last watched:
    # not the whole object, whose managedFields alone are a few kilobytes.
    resource: dict[str, Any]
    # Read from the object once: the watch catches up with our own status writes only later,
    # so from then on the status the last pass stored is the truth.
    status: ModelDeploymentStatus
    logger: Logger
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

    def deployment(self, owner: ResourceKey, suffix: str = "") -> ObservedDeployment | None:
        return self._deployments.get((owner, suffix))

    def revision(self, kind: str, owner: ResourceKey, suffix: str = "") -> str | None:
        """Of the Service or PodDisruptionBudget; None when there is none."""
        return self._revisions.get((kind, owner, suffix))


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
        write_grants: WriteGrants | None = None,
        concurrency: int,
        status_refresh_seconds: float,
        retry_backoff_max_seconds: float,
        shard_label_keys: frozenset[str] = frozenset(),
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
        at once. Most events are our own status writes: they change nothing here."""
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
        if tracked is None:
            status = _stored_status(body.get("status"), logger)
            self.tracker.track(key, Tracked(identity, status, logger))
        elif identity["metadata"] != tracked.resource["metadata"]:
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

    # --- one pass -----------------------------------------------------------------------

    async def run_pass(self, key: ResourceKey) -> float:
        """One pass of a tracked resource, and what its failure means; returns the seconds
        until the next one (the scheduler's work)."""
        tracked = self.tracker.get(key)
        if tracked is None:
            return 0.0  # untracked since it was scheduled: the scheduler has dropped it
        try:
            async with self._slots:
                decision, delay = await self._reconcile(key, tracked)
            tracked.status = await self._report(tracked, decision, tracked.refresh_seconds)
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

    async def _reconcile(self, key: ResourceKey, tracked: Tracked) -> tuple[Decision, float]:
        """Resolve, decide and apply. Returns the decision, whose status and Events are still
        to be reported, and the seconds until the next pass."""
        namespace, name = key
        try:
            spec = ModelDeploymentSpec.model_validate(tracked.resource["spec"])
        except ValidationError as exc:
            # The CRD schema refuses most bad specs; this catches what it cannot express.
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            default = ModelDeploymentSpec.model_fields["poll_interval_seconds"].default
            invalid = invalid_spec(tracked.status, tracked.generation, problems, self._clock.now())
            return invalid, float(default)

        tracking_uri = get_tracking_uri(spec, self._defaults)
        self.tracker.watch_model(
            key, (tracking_uri, spec.model_uri.name), spec.poll_interval_seconds
        )
        resolution = await self._resolve(tracking_uri, spec.model_uri)
        observed = self.observed.deployment(key)
        sides = {v: self.observed.deployment(key, v) for v in (CANARY, CHALLENGER)}
        status = await self._measure(key, spec, tracked)
        gates = Gates()
        if isinstance(resolution, ResolvedVersion):
            try:
                gates = await self._check_gates(spec, tracking_uri, status, resolution, observed)
            except RegistryProblem as problem:
                resolution = problem
        challenger_resolution = None
        if spec.challenger is not None:
            uri = ModelUri(spec.model_uri.name, spec.challenger.alias)
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
            canary_deployment=sides[CANARY],
            promoted=tracked.resource["metadata"]["annotations"].get(PROMOTE_ANNOTATION, ""),
            challenger=challenger.plan(
                spec, status.challenger, challenger_resolution, observed, sides[CHALLENGER]
            ),
        )
        decision = replace(decision, status=with_version_url(decision.status, spec, self._defaults))
        applying = ""  # the kind of child in hand, named if the API server refuses it
        try:
            await self._claim_children(owner, spec, decision)
            if decision.pin is not None:
                applying = "Deployment"
                if spec.replicas is None and observed is not None and observed.replicas_applied:
                    await self._children.apply(
                        get_replicas_handover(owner, observed.desired_replicas),
                        current_revision=None,
                        field_manager=HANDOVER_FIELD_MANAGER,
                    )
                await self._children.apply(
                    get_deployment(
                        owner, spec, decision.pin, self._defaults, replicas=decision.stable_replicas
                    ),
                    current_revision=observed.revision if observed else None,
                )
                applying = "Service"
                for variant in ("", *_variants_in_use(spec)):
                    await self._apply_service(key, get_service(owner, spec, variant), tracked)
                applying = "PodDisruptionBudget"
                await self._apply_disruption_budget(key, get_disruption_budget(owner, spec), spec)
            for variant, side in ((CANARY, decision.canary), (CHALLENGER, decision.challenger)):
                applying = f"{variant}'s Deployment"
                await self._apply_side(key, owner, spec, variant, side, sides[variant])
        except NameClash as clash:
            return name_clash(tracked.status, str(clash), now), float(spec.poll_interval_seconds)
        except ApiError as exc:
            if exc.status not in _INVALID:
                raise
            decision = refused(tracked.status, decision, applying, exc.message, now)
        decision = await self._tell_registry(key, spec, tracking_uri, tracked, decision)
        delay = float(spec.poll_interval_seconds)
        if decision.wake_at is not None:  # a pause ends, a measurement is due
            delay = min(delay, max((decision.wake_at - now).total_seconds(), _SOONEST))
        return decision, delay

    async def _apply_side(
        self,
        key: ResourceKey,
        owner: Owner,
        spec: ModelDeploymentSpec,
        variant: str,
        side: Side | None,
        observed: ObservedDeployment | None,
    ) -> None:
        """The Deployment of the canary or the challenger as decided. Once the spec no longer
        has that side, its Deployment goes when drained, and its Services go."""
        revision = observed.revision if observed else None
        if side is not None:
            manifest = get_deployment(
                owner, spec, side.pin, self._defaults, variant=variant, replicas=side.replicas
            )
            await self._children.apply(manifest, current_revision=revision)
        in_use = _variants_in_use(spec)
        if variant in in_use:
            return
        if observed is not None and observed.desired_replicas == 0 and side is None:
            pin = PinnedVersion(observed.version, observed.run_id)
            manifest = get_deployment(owner, spec, pin, self._defaults, variant=variant)
            await self._children.delete(manifest)
        for gone in (variant, *(() if in_use else (MAIN,))):
            if self.observed.revision("Service", key, service_suffix(gone)) is not None:
                await self._children.delete(get_service(owner, spec, gone))

    async def _claim_children(
        self, owner: Owner, spec: ModelDeploymentSpec, decision: Decision
    ) -> None:
        """Raises NameClash unless every child this pass is to apply may be (see
        Children.claim): a name another object holds stops the pass before it writes any."""
        wanted: list[dict[str, Any]] = []
        if decision.pin is not None:
            wanted.append(get_deployment(owner, spec, decision.pin, self._defaults))
            wanted += [get_service(owner, spec, v) for v in ("", *_variants_in_use(spec))]
            if spec.serving.disruption_budget is not None:
                wanted.append(get_disruption_budget(owner, spec))
        for variant, side in ((CANARY, decision.canary), (CHALLENGER, decision.challenger)):
            if side is not None:
                pin = side.pin
                wanted.append(get_deployment(owner, spec, pin, self._defaults, variant=variant))
        for manifest in wanted:
            await self._children.claim(manifest)

    async def _measure(
        self, key: ResourceKey, spec: ModelDeploymentSpec, tracked: Tracked
    ) -> ModelDeploymentStatus:
        """The status with the measurements of the canary's analysis that are due now."""
        status = tracked.status
        state, step = status.canary, canary.analysis_under_way(spec, status.canary)
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
        decision: Decision,
    ) -> Decision:
        """Tag the versions this pass changed the fate of (where they serve, what was rolled
        or held back), and move the alias back after a rollback if the spec says so and the
        alias still points at the failed version. Only with a write grant for the namespace
        and model (the RegistryWritesGranted condition says). Best effort: the registry's
        answers do not change what serves."""
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
            for write in registry_records(tracked.status, decision.status, "/".join(key)):
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
        resolved: ResolvedVersion,
        observed: ObservedDeployment | None,
    ) -> Gates:
        """The release gates of the version a rollout would start to: its approval tags
        (asked each time: tags change) and its signature against the serving version's
        (cached: versions are immutable). Nothing to check: Gates()."""
        version = candidate(spec, status, resolved, observed)
        if version is None:
            return Gates()
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

    async def _apply_service(
        self, key: ResourceKey, service: dict[str, Any], tracked: Tracked
    ) -> None:
        """Apply the Service. One of this resource's edited beyond what an apply can merge (a
        port changed by hand: ports are keyed by number, so the apply adds ours next to it,
        under the same name) is invalid once merged: it is deleted and created anew. One
        handed over but not yet taken is never deleted: the refusal is reported."""
        try:
            await self._children.apply(
                service, current_revision=self.observed.revision("Service", key)
            )
        except ApiError as exc:
            if exc.status not in _INVALID:
                raise
            try:
                await self._children.delete(service)
            except NameClash:
                raise exc from None
            tracked.logger.warning(f"recreating the Service, edited beyond a merge: {exc}")
            await self._children.apply(service, current_revision=None)

    async def _apply_disruption_budget(
        self, key: ResourceKey, budget: dict[str, Any], spec: ModelDeploymentSpec
    ) -> None:
        """Apply the PodDisruptionBudget the spec asks for, or delete one it no longer does."""
        revision = self.observed.revision("PodDisruptionBudget", key)
        if spec.serving.disruption_budget is not None:
            await self._children.apply(budget, current_revision=revision)
        elif revision is not None:
            await self._children.delete(budget)

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
        self, tracked: Tracked, decision: Decision, status_refresh_seconds: float = 0.0
    ) -> ModelDeploymentStatus:
        """Write the decided status (when due, see `status_to_store`) and post its Events;
        returns the status stored."""
        meta = tracked.resource["metadata"]
        key = (meta["namespace"], meta["name"])
        to_store = status_to_store(tracked.status, decision.status, status_refresh_seconds)
        if to_store is not None:
            await self._reporter.patch_status(
                meta["namespace"], meta["name"], to_store.model_dump(by_alias=True, mode="json")
            )
        metrics.observe_resource(
            key, tracked.resource["spec"].get("model", ""), tracked.status, decision.status
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
        return to_store if to_store is not None else tracked.status

    async def _failed(self, tracked: Tracked, exc: Exception) -> float:
        """Back off after a Kubernetes API failure; from the third in a row on, show it in
        status and as an Event, not only in the operator's log. Returns the back-off."""
        tracked.failures += 1
        delay = min(2.0**tracked.failures, self._retry_backoff_max_seconds)
        metrics.RECONCILE_ERRORS.inc()
        tracked.logger.warning(f"Kubernetes API error, retrying in {delay:.0f}s: {describe(exc)}")
        if tracked.failures == FAILURES_BEFORE_REPORT:
            decision = api_failing(tracked.status, describe(exc), self._clock.now())
            # Best effort: when the API server itself is what fails, this fails too.
            with contextlib.suppress(*RETRIED):
                tracked.status = await self._report(tracked, decision)
        return delay


def _variants_in_use(spec: ModelDeploymentSpec) -> tuple[str, ...]:
    """The sides with a Service of their own: the main side and the canary (Canary strategy)
    or the challenger; none without either."""
    if spec.canary:
        return (MAIN, CANARY)
    if spec.challenger is not None:
        return (MAIN, CHALLENGER)
    return ()


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
            # A manual promotion: no new generation, but a pass at once.
            "annotations": {k: v for k, v in annotations.items() if k == PROMOTE_ANNOTATION},
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
