"""Pure rollout decisions: what the registry says + what the Deployment shows -> what to do.

`decide` never performs I/O. It returns the next status, the version to render (or None to
leave the Deployment alone) and the Events worth posting. Events follow transitions only, so
calling `decide` again with the same inputs posts nothing new. A decision is made in named
steps: record the resolution, choose the target, detect a failed rollout, record the
rollout's progress, then set the phase and conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from aliasop import canary
from aliasop.analysis_models import AnalysisStep
from aliasop.challenger import ChallengerPlan
from aliasop.deployments import ObservedDeployment
from aliasop.domain import NOTHING_ASKED, PinnedVersion, Requests, Side
from aliasop.events import Event, EventType
from aliasop.models import (
    ABORT_ANNOTATION,
    RETRY_ANNOTATION,
    TAG_PREFIX,
    CanaryPhase,
    Condition,
    ConditionType,
    HistoryEntry,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    OnFailure,
    Outcome,
    Phase,
    Reason,
    RegistryProblem,
    ResolvedVersion,
)


class RolloutState(StrEnum):
    """Where a resource's rollout stands, derived from its status (`state_of`)."""

    PENDING = "Pending"  # nothing has rolled out yet
    SERVING = "Serving"  # the version rolled out serves; nothing under way
    HELD = "Held"  # a release gate holds the alias's version back; the serving one stays
    ROLLING_OUT = "RollingOut"  # a rolling update to a new version
    CANARY = "Canary"  # a canary beside the stable side, at one of its steps
    PROMOTING = "Promoting"  # the canary passed: the stable side moves to its version
    ROLLING_BACK = "RollingBack"  # a failed version is being replaced by the last good one
    FAILED = "Failed"  # a version failed; the last good one serves until the alias moves
    ABORTED = "Aborted"  # a person stopped a version's rollout; the last good one serves
    PAUSED = "Paused"  # spec.paused: nothing moves


def state_of(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> RolloutState:
    """The rollout state `status` records (with `spec.paused`): a canary in flight, else the
    rollout history's open entry, else what the last rollouts left."""
    if spec.paused:
        return RolloutState.PAUSED
    if status.canary is not None:
        promoting = status.canary.phase is CanaryPhase.PROMOTING
        return RolloutState.PROMOTING if promoting else RolloutState.CANARY
    latest = status.history[0] if status.history else None
    if latest is not None and latest.outcome is Outcome.PROGRESSING:
        rollback = latest.reason is Reason.ROLLBACK
        return RolloutState.ROLLING_BACK if rollback else RolloutState.ROLLING_OUT
    if status.failed_version is not None:
        aborted = _latest_of(status, status.failed_version)
        if aborted is not None and aborted.outcome is Outcome.ABORTED:
            return RolloutState.ABORTED
        return RolloutState.FAILED
    if status.held_version is not None:
        return RolloutState.HELD
    if status.serving_version is None:
        return RolloutState.PENDING
    return RolloutState.SERVING


@dataclass(frozen=True)
class Decision:
    status: ModelDeploymentStatus
    pin: PinnedVersion | None  # the version to render; None leaves the Deployment untouched
    events: list[Event] = field(default_factory=list)
    revert_alias_to: str | None = None  # onFailure: RevertAlias, after a rollback
    stable_replicas: int | None = None  # while a canary runs: the stable side's share
    canary: Side | None = None  # None leaves the canary Deployment untouched
    challenger: Side | None = None  # None leaves the challenger Deployment untouched
    wake_at: datetime | None = None  # a pause's end or a measurement due: pass again then


@dataclass(frozen=True)
class TagWrite:
    """A model-version tag the registry is told (value None: deleted)."""

    version: str
    key: str
    value: str | None


def record_key(resource: str) -> str:
    """The model-version tag that says what became of a version at `resource`
    (namespace/name)."""
    return f"{TAG_PREFIX}{resource}"


def registry_records(
    previous: ModelDeploymentStatus, new: ModelDeploymentStatus, resource: str
) -> list[TagWrite]:
    """What the registry is told of what happened to `resource` (namespace/name) in a pass:
    the version that serves there now (and the one that stopped), a version rolled back or
    aborted, a version a release gate held back. One tag per version and resource, its value the
    latest word; written on transitions only."""
    key = record_key(resource)
    writes: list[TagWrite] = []
    if new.serving_version != previous.serving_version:
        if previous.serving_version is not None:
            writes.append(TagWrite(previous.serving_version, key, None))
        if new.serving_version is not None:
            writes.append(TagWrite(new.serving_version, key, "serving"))
    if new.failed_version is not None and new.failed_version != previous.failed_version:
        latest = _latest_of(new, new.failed_version)
        aborted = latest is not None and latest.outcome is Outcome.ABORTED
        fate = "aborted" if aborted else "rolled back"
        writes.append(TagWrite(new.failed_version, key, f"{fate}: {new.message}"))
    gate = new.condition(ConditionType.SIGNATURE_COMPATIBLE)
    if (
        new.held_version is not None
        and gate is not None
        and not gate.is_true
        and new.held_version != previous.held_version
    ):
        writes.append(TagWrite(new.held_version, key, f"held back: {gate.message}"))
    return writes


@dataclass(frozen=True)
class Gates:
    """What the release gates found for the candidate (see `candidate`, named by `needs`): the
    reconciler asks the registry, `decide` holds the rollout back when a gate is shut."""

    version: str | None = None  # the candidate checked; None: there was none to check
    unapproved: tuple[str, ...] = ()  # requiredTags entries it lacks: "key=value (is: x)"
    breaking: tuple[str, ...] = ()  # how its inputs break what clients send the serving one
    serving: str | None = None  # the version its signature was compared with
    signature_note: str = ""  # why the signatures were not compared, when they were not

    @property
    def shut(self) -> bool:
        return bool(self.unapproved or self.breaking)


def unapproved_tags(required: Mapping[str, str], tags: Mapping[str, str]) -> tuple[str, ...]:
    """The `required` entries `tags` lacks, each with what the tag is instead."""
    return tuple(
        f"{key}={value} (is: {tags.get(key, 'unset')})"
        for key, value in sorted(required.items())
        if tags.get(key) != value
    )


@dataclass(frozen=True)
class Needs:
    """What a pass must learn before it decides, each named once (`needs`) and asked once by
    the reconciler: the version whose release gates to check, the canary analysis whose
    measurements are due, the challenger alias to resolve."""

    candidate: str | None
    analysis: AnalysisStep | None
    challenger_alias: str | None


def needs(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    resolved: ResolvedVersion | None,
    observed: ObservedDeployment | None,
    asked: Requests = NOTHING_ASKED,
) -> Needs:
    """The I/O a pass needs, from the stored status, the alias resolved, the Deployment and
    what a person asks."""
    return Needs(
        candidate=candidate(spec, status, resolved, observed, asked),
        analysis=canary.analysis_under_way(spec, status.canary),
        challenger_alias=spec.challenger.alias if spec.challenger is not None else None,
    )


def candidate(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    resolved: ResolvedVersion | None,
    observed: ObservedDeployment | None,
    asked: Requests = NOTHING_ASKED,
) -> str | None:
    """The version a rollout would start to now, before the release gates: the alias's,
    unless paused, unresolved, already running, or a version that failed and was rolled back
    or was aborted (tried again only once the alias moves away and back, or a retry names
    it)."""
    current = observed.version if observed is not None else None
    if resolved is None or spec.paused:
        return None
    if resolved.version == current:
        return None
    if status.canary is not None and resolved.version == status.canary.version:
        return None  # its canary is under way
    if resolved.version == status.failed_version and not retry_pending(status, asked):
        return None
    return resolved.version


def retry_pending(status: ModelDeploymentStatus, asked: Requests) -> bool:
    """A retry names the version that failed or was aborted, and has not been carried out
    for it yet: the rollout it starts is recorded as Retried, so that a retried version that
    fails again stays failed (until the alias moves) instead of being retried in a loop."""
    if not asked.retry or asked.retry != status.failed_version:
        return False
    latest = _latest_of(status, asked.retry)
    return latest is None or latest.reason is not Reason.RETRIED


def _latest_of(status: ModelDeploymentStatus, version: str) -> HistoryEntry | None:
    """The newest history entry of `version`."""
    return next((e for e in status.history if e.version == version), None)


@dataclass
class _Draft:
    """A decision being made: the next status, and the Events it has earned so far."""

    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus
    now: datetime
    events: list[Event] = field(default_factory=list)
    revert_alias_to: str | None = None

    def post(self, type_: EventType, reason: Reason, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def set_condition(
        self, type_: ConditionType, value: bool, reason: str, message: str
    ) -> bool | None:
        return _set_condition(self.status, type_, value, reason, message, self.now)


@dataclass(frozen=True)
class _Target:
    """The version the Deployment should run, and why a rollout to it starts (None: no new
    rollout, the Deployment keeps or finishes what it runs)."""

    version: str | None
    start_reason: Reason | None = None
    failure: str | None = None  # why the rollout failed in this pass, for the status message
    aborted: str | None = None  # what a person's abort did in this pass, for the message
    held: str | None = None  # a candidate a release gate holds back


def decide(
    spec: ModelDeploymentSpec,
    generation: int,
    status: ModelDeploymentStatus,
    resolution: ResolvedVersion | RegistryProblem,
    observed: ObservedDeployment | None,
    now: datetime,
    selector: str | None = None,
    gates: Gates | None = None,
    canary_deployment: ObservedDeployment | None = None,
    asked: Requests = NOTHING_ASKED,
    challenger: ChallengerPlan | None = None,
) -> Decision:
    """`selector`: the serving pods' label selector, reported for the scale subresource.
    `gates`: what the release gates found for the candidate, whose `version` it is (None: no
    gate checked, the candidate is worked out here). `canary_deployment`: the canary
    Deployment, if there is one; `asked`: what a person asks through annotations (promote,
    abort, retry); `challenger`: the challenger side, as planned (aliasop.challenger)."""
    draft = _Draft(spec, status.model_copy(deep=True), now.replace(microsecond=0))
    draft.status.observed_generation = generation
    sides = (observed, canary_deployment, challenger.observed if challenger else None)
    draft.status.replicas = sum(d.replicas for d in sides if d)
    draft.status.challenger = challenger.status if challenger is not None else None
    draft.events.extend(challenger.events if challenger is not None else ())
    draft.status.selector = selector
    resolved = resolution if isinstance(resolution, ResolvedVersion) else None
    problem = resolution if isinstance(resolution, RegistryProblem) else None

    _record_resolution(draft, resolved)
    _adopt_unrecorded_rollout(draft, observed)
    retrying = retry_pending(draft.status, asked)
    if retrying:
        draft.status.failed_version = None
    checked = (
        gates if gates is not None else Gates(candidate(spec, status, resolved, observed, asked))
    )
    version, gates = checked.version, gates if gates is not None else Gates()
    target = _choose_target(draft, observed, version, gates, retrying)
    wake_at: datetime | None = None
    if spec.canary or draft.status.canary is not None:  # the strategy that has the main side
        target, wake_at = _run_canary(
            draft, target, resolved, problem, observed, canary_deployment, asked
        )
    target = _abort_rolling_update(draft, target, asked)
    target = _detect_failed_rollout(draft, target, observed)
    pin = _pin(draft, target, resolved, problem, observed)
    _record_progress(draft, target, pin, observed)
    _set_phase_and_conditions(draft, target, problem, observed, gates)
    draft.status.held_version = target.held
    stable_replicas, canary_side = _sides(draft, problem, observed, canary_deployment)
    if challenger is not None and stable_replicas is None:
        stable_replicas = challenger.main_replicas
    return Decision(
        draft.status,
        pin,
        draft.events,
        draft.revert_alias_to,
        stable_replicas=stable_replicas,
        canary=canary_side,
        challenger=challenger.side if challenger is not None else None,
        wake_at=wake_at,
    )


def _record_resolution(draft: _Draft, resolved: ResolvedVersion | None) -> None:
    """Step 1, resolve: where the alias points now."""
    st = draft.status
    if resolved is None:
        return
    if st.alias_version is not None and st.alias_version != resolved.version:
        draft.post(
            EventType.NORMAL,
            Reason.ALIAS_MOVED,
            f"{draft.spec.model_uri} moved from version {st.alias_version} to {resolved.version}",
        )
    if st.failed_version is not None and resolved.version != st.failed_version:
        st.failed_version = None  # the alias moved away: the version may be tried again
    st.alias_version = resolved.version
    st.last_resolved_time = draft.now


def _adopt_unrecorded_rollout(draft: _Draft, observed: ObservedDeployment | None) -> None:
    """The Deployment runs a version the status never recorded: the operator stopped between
    applying it and writing status. Record that rollout now, so it is never repeated."""
    st = draft.status
    if observed is not None and observed.version not in (st.target_version, st.serving_version):
        pinned = PinnedVersion(observed.version, observed.run_id)
        _record_start(draft, pinned, Reason.ADOPTED)


def _choose_target(
    draft: _Draft,
    observed: ObservedDeployment | None,
    version: str | None,
    gates: Gates,
    retrying: bool,
) -> _Target:
    """Step 2: the candidate `version`, when the release gates let it through; else what
    runs."""
    current = observed.version if observed is not None else None
    if version is None:
        return _Target(current)
    if gates.version == version and gates.shut:
        return _Target(current, held=version)
    if retrying:
        return _Target(version, Reason.RETRIED)
    return _Target(version, Reason.CREATED if current is None else Reason.ALIAS_MOVED)


def _run_canary(
    draft: _Draft,
    target: _Target,
    resolved: ResolvedVersion | None,
    problem: RegistryProblem | None,
    stable: ObservedDeployment | None,
    canary_deployment: ObservedDeployment | None,
    asked: Requests,
) -> tuple[_Target, datetime | None]:
    """Canary strategy: a rollout from a serving version starts a canary instead of moving the
    stable Deployment; the canary goes through its steps, then the stable Deployment moves to
    its version. An alias that moves on restarts it with the new version; one that moves
    back, a strategy dropped, abort it. Returns the main side's target, and when to pass
    again for the canary's sake."""
    st, spec = draft.status, draft.spec
    state = st.canary
    current = stable.version if stable is not None else None
    if state is not None and asked.abort == state.version and asked.retry != state.version:
        return _abort_canary(draft, target, f"the canary of version {state.version}", True), None
    if state is not None and state.phase is CanaryPhase.PROMOTING:
        if current == state.version:  # the stable Deployment has its template: a rollout
            st.canary = None  # like any other from here on (history, deadline, rollback)
        return replace(target, version=state.version), None
    moved_on = target.start_reason in (Reason.ALIAS_MOVED, Reason.RETRIED)
    moved_away = resolved is not None and state is not None and resolved.version != state.version
    if state is not None and (not spec.canary or moved_away):
        why = (
            "rollout.strategy is no longer Canary"
            if not spec.canary
            else f"{spec.model_uri} moved to version {resolved.version if resolved else ''}"
        )
        _finish(draft, state.version, Outcome.SUPERSEDED)
        if spec.canary and moved_on and target.version is not None:
            draft.post(
                EventType.NORMAL,
                Reason.CANARY_RESTARTED,
                f"canary of version {state.version} restarts with version {target.version}: {why}",
            )
        else:
            draft.post(
                EventType.NORMAL,
                Reason.CANARY_ABORTED,
                f"canary of version {state.version} stopped: {why}",
            )
        st.canary = state = None
    if state is None:
        if not (spec.canary and moved_on and target.version is not None and current is not None):
            return target, None
        if current != st.serving_version:  # a first rollout, or one after a failure: whole
            return target, None
        pin = PinnedVersion(target.version, _run_id_of(target.version, resolved, stable, draft))
        state = canary.start(spec, pin.version, pin.run_id, current, draft.now)
        _record_start(draft, pin, target.start_reason or Reason.ALIAS_MOVED)
        draft.post(
            EventType.NORMAL,
            Reason.ROLLOUT_STARTED,
            f"canary of version {pin.version} beside version {current}: step 1/"
            f"{state.steps}, {canary.describe(spec.rollout.steps[0])}",
        )
        st.canary = state
        target = replace(target, version=current, start_reason=None)
    if problem is not None or spec.paused:
        # Held where it is until the registry answers, or the spec unpauses.
        return replace(target, version=state.stable_version), None
    progress = canary.advance(spec, state, stable, canary_deployment, asked, draft.now)
    draft.events.extend(progress.events)
    if progress.abort is not None:
        return _abort_canary(draft, target, progress.abort), None
    st.canary = progress.state
    version = st.canary.version if progress.promoting else state.stable_version
    return replace(target, version=version), progress.wake_at


def _abort_canary(draft: _Draft, target: _Target, why: str, asked: bool = False) -> _Target:
    """The canary failed (or, `asked`, a person aborted it: `why` names it): it goes to zero,
    the stable version keeps serving, and the version is not tried again until the alias
    moves away and back or a retry names it (like a rolled-back version)."""
    st, uri = draft.status, draft.spec.model_uri
    state = st.canary
    assert state is not None
    st.failed_version, st.canary = state.version, None
    target = replace(target, version=state.stable_version)
    if asked:
        return _aborted(draft, target, state.version, why, state.stable_version)
    _finish(draft, state.version, Outcome.FAILED, why)
    failure = f"{why}; aborted, version {state.stable_version} kept serving"
    if draft.spec.rollout.on_failure is OnFailure.REVERT_ALIAS:
        draft.revert_alias_to = state.stable_version
        failure += f", and {uri} moved back to it"
    else:
        failure += f". It is tried again when {uri} moves away and back"
    draft.post(EventType.WARNING, Reason.ROLLOUT_FAILED, failure)
    return replace(target, failure=failure)


def _sides(
    draft: _Draft,
    problem: RegistryProblem | None,
    stable: ObservedDeployment | None,
    canary_deployment: ObservedDeployment | None,
) -> tuple[int | None, Side | None]:
    """Replicas of the stable side (None: spec.replicas) and the canary Deployment to apply
    (None: leave it as it is)."""
    state, replicas = draft.status.canary, draft.spec.replicas
    if problem is not None or replicas is None:
        return None, None
    if state is None:
        if canary_deployment is None or canary_deployment.desired_replicas == 0:
            return None, None
        pods = canary.drain(replicas, stable, canary_deployment)
        pin = PinnedVersion(canary_deployment.version, canary_deployment.run_id)
        return None, Side(pin, pods)
    pin = PinnedVersion(state.version, state.run_id)
    if state.phase is CanaryPhase.PROMOTING:
        current = canary_deployment.desired_replicas if canary_deployment is not None else 0
        return None, Side(pin, current)
    wanted = canary.canary_pods(state.weight, replicas)
    sides = canary.scale(
        replicas, wanted, stable, state.stable_version, canary_deployment, state.version
    )
    return sides.stable, Side(pin, sides.canary)


def _abort_rolling_update(draft: _Draft, target: _Target, asked: Requests) -> _Target:
    """A person aborts the rolling update of the version it names: back to the last good
    version, as a rollback, the alias left alone. A rollback, or a rollout with nothing good
    to go back to, is not aborted."""
    st = draft.status
    latest = st.history[0] if st.history else None
    if (
        not asked.abort
        or asked.abort == asked.retry
        or target.version != asked.abort
        or latest is None
        or (latest.version, latest.outcome) != (asked.abort, Outcome.PROGRESSING)
        or latest.reason is Reason.ROLLBACK
        or st.last_good_version in (None, asked.abort)
    ):
        return target
    good = st.last_good_version
    assert good is not None
    st.failed_version = asked.abort
    target = replace(target, version=good, start_reason=Reason.ROLLBACK)
    return _aborted(draft, target, asked.abort, f"the rollout of version {asked.abort}", good)


def _aborted(draft: _Draft, target: _Target, version: str, what: str, back_to: str) -> _Target:
    """Record and announce the abort of `version`'s rollout (`what`), back on `back_to`."""
    _finish(draft, version, Outcome.ABORTED, f"aborted: {ABORT_ANNOTATION}={version}")
    aborted = f"{what} was aborted ({ABORT_ANNOTATION}={version}); back to version {back_to}"
    draft.post(EventType.NORMAL, Reason.ROLLOUT_ABORTED, aborted)
    return replace(target, aborted=aborted)


def _detect_failed_rollout(
    draft: _Draft, target: _Target, observed: ObservedDeployment | None
) -> _Target:
    """Step 3: the version the Deployment runs missed its progress deadline. Roll back to the
    last good version when allowed; either way the failure stays in the status message."""
    st, uri = draft.status, draft.spec.model_uri
    if (
        observed is None
        or target.version != observed.version
        or not observed.up_to_date
        or not observed.deadline_exceeded
        or observed.version == st.last_good_version
    ):
        return target
    failed, good = observed.version, st.last_good_version
    failure = (
        f"version {failed} did not become available within "
        f"{draft.spec.rollout.progress_deadline_seconds}s"
    )
    if _finish(draft, failed, Outcome.FAILED, failure):
        draft.post(EventType.WARNING, Reason.ROLLOUT_FAILED, failure)
    if not draft.spec.rollout.auto_rollback or good is None:
        return replace(target, failure=failure)
    st.failed_version = failed
    if draft.spec.rollout.on_failure is OnFailure.REVERT_ALIAS:
        draft.revert_alias_to = good
        failure += f"; rolled back to version {good}, and {uri} with it"
    else:
        failure += (
            f"; rolled back to version {good}. It is tried again when {uri} moves away and back"
        )
    return replace(target, version=good, start_reason=Reason.ROLLBACK, failure=failure)


def _pin(
    draft: _Draft,
    target: _Target,
    resolved: ResolvedVersion | None,
    problem: RegistryProblem | None,
    observed: ObservedDeployment | None,
) -> PinnedVersion | None:
    """The version to render, or None to leave the Deployment alone: without a target, and
    while the registry has a problem unless the target differs from what runs (a rollback)."""
    current = observed.version if observed is not None else None
    if target.version is None or (problem is not None and target.version == current):
        return None
    return PinnedVersion(target.version, _run_id_of(target.version, resolved, observed, draft))


def _record_progress(
    draft: _Draft,
    target: _Target,
    pin: PinnedVersion | None,
    observed: ObservedDeployment | None,
) -> None:
    """Step 4: open a history entry for a rollout that starts; close it once every pod of
    the version the Deployment runs is available."""
    st = draft.status
    current = observed.version if observed is not None else None
    if target.start_reason is not None and pin is not None:
        if _record_start(draft, pin, target.start_reason):
            source = f"from version {current} " if current is not None else ""
            draft.post(
                EventType.NORMAL,
                Reason.ROLLOUT_STARTED,
                f"rolling out {source}to version {pin.version}",
            )
    elif observed is not None and observed.rolled_out and target.version == current:
        if _finish(draft, current, Outcome.SUCCEEDED) or st.serving_version != current:
            draft.post(
                EventType.NORMAL,
                Reason.ROLLOUT_SUCCEEDED,
                f"version {current} is serving: {observed.available_replicas} pods available",
            )
        st.serving_version = st.last_good_version = current
    st.target_version = target.version


def _set_phase_and_conditions(
    draft: _Draft,
    target: _Target,
    problem: RegistryProblem | None,
    observed: ObservedDeployment | None,
    gates: Gates,
) -> None:
    """Step 5: phase, message and conditions, with an Event for each condition that turns
    bad (RolloutFailed was announced where it happened, with its own message)."""
    st = draft.status
    rolling = st.canary is not None or (
        target.version is not None
        and (observed is None or target.version != observed.version or not observed.rolled_out)
    )
    unreachable = problem is not None and problem.kind is Reason.REGISTRY_UNAVAILABLE
    failure = target.failure
    aborted = _aborted_message(draft, target)
    if failure is None and aborted is None and st.failed_version is not None:
        why = next(
            (
                f" ({e.message})"
                for e in st.history
                if e.version == st.failed_version and e.outcome is Outcome.FAILED and e.message
            ),
            "",
        )
        failure = (
            f"version {st.failed_version} failed to roll out{why}; serving version "
            f"{st.serving_version}. It is tried again when {draft.spec.model_uri} moves away "
            "and back"
        )
    current = observed.version if observed is not None else None
    held_by_signature = target.held is not None and gates.breaking
    waiting = target.held is not None and not gates.breaking  # for approval
    degraded: tuple[Reason, str] | None = None
    if problem is not None and not unreachable:
        degraded = (problem.kind, problem.message)
    elif held_by_signature:
        degraded = (
            Reason.SIGNATURE_INCOMPATIBLE,
            f"version {target.held} is held back: its inputs break what clients send "
            f"version {gates.serving or current}: {'; '.join(gates.breaking)}",
        )
    elif failure is not None:
        degraded = (Reason.ROLLOUT_FAILED, failure)

    if degraded is not None:
        st.phase, st.message = Phase.DEGRADED, degraded[1]
    elif aborted is not None:
        st.phase, st.message = Phase.ABORTED, aborted
    elif draft.spec.paused:
        st.phase = Phase.PAUSED
        st.message = (
            f"paused: alias points at version {st.alias_version}, "
            f"serving version {st.serving_version}"
        )
    elif target.version is None:
        st.phase = Phase.PENDING
        st.message = problem.message if problem is not None else "waiting for the registry"
    elif rolling:
        st.phase = Phase.PROGRESSING
        st.message = (
            canary.summary(st.canary)
            if st.canary is not None
            else f"rolling out version {target.version}"
        )
    else:
        st.phase, st.message = Phase.READY, f"version {target.version} is serving"
    if waiting:
        approval = f"version {target.held} waits for approval: {', '.join(gates.unapproved)}"
        st.message = approval if target.version is None else f"{st.message}; {approval}"

    if problem is not None and unreachable:
        if st.phase is not Phase.PENDING:
            st.message += f" (registry unavailable: {problem.message})"
        was_reachable = draft.set_condition(
            ConditionType.REGISTRY_AVAILABLE, False, problem.kind, problem.message
        )
        if was_reachable:
            draft.post(EventType.WARNING, Reason.REGISTRY_UNAVAILABLE, problem.message)
    else:
        was_reachable = draft.set_condition(
            ConditionType.REGISTRY_AVAILABLE,
            True,
            Reason.REACHABLE,
            "MLflow answered the last resolution",
        )
        if was_reachable is False:
            draft.post(EventType.NORMAL, Reason.REGISTRY_AVAILABLE, "MLflow answers again")

    previous = st.condition(ConditionType.DEGRADED)
    was_degraded_for = previous.reason if previous is not None and previous.is_true else None
    reason, message = degraded if degraded is not None else (Reason.AS_EXPECTED, "")
    draft.set_condition(ConditionType.DEGRADED, degraded is not None, reason, message)
    if degraded is not None and reason not in (Reason.ROLLOUT_FAILED, was_degraded_for):
        draft.post(EventType.WARNING, reason, message)
    draft.set_condition(
        ConditionType.PROGRESSING,
        rolling,
        Reason.ROLLING_OUT if rolling else Reason.IDLE,
        st.message,
    )
    _set_gate_conditions(draft, target, gates, current)
    _set_kstatus_conditions(draft, target, rolling, degraded, problem, waiting, aborted)
    for condition in st.conditions:
        condition.observed_generation = st.observed_generation


def _aborted_message(draft: _Draft, target: _Target) -> str | None:
    """What the status says while a version's rollout stays aborted; None: none is."""
    st = draft.status
    version = st.failed_version
    latest = _latest_of(st, version) if version is not None else None
    if version is None or latest is None or latest.outcome is not Outcome.ABORTED:
        return None
    done = target.aborted or (
        f"the rollout of version {version} was aborted ({ABORT_ANNOTATION}={version})"
    )
    return (
        f"{done}; serving version {st.serving_version}. It rolls out again when "
        f"{draft.spec.model_uri} moves away and back, or with {RETRY_ANNOTATION}={version}"
    )


def _set_gate_conditions(draft: _Draft, target: _Target, gates: Gates, current: str | None) -> None:
    """SignatureCompatible and (with requiredTags) Approved, for the candidate checked; once
    there is none (it rolled out, or the alias moved back), a shut gate opens again."""
    st = draft.status
    if gates.version is not None:
        if gates.breaking:
            signature = (False, Reason.SIGNATURE_INCOMPATIBLE, "; ".join(gates.breaking))
        elif gates.signature_note:
            signature = (True, Reason.NOT_COMPARED, gates.signature_note)
        else:
            against = gates.serving or current
            checked = f"version {gates.version} takes what clients send version {against}"
            signature = (True, Reason.COMPATIBLE, checked if against else "nothing serves yet")
        draft.set_condition(ConditionType.SIGNATURE_COMPATIBLE, *signature)
    _reopen(draft, ConditionType.SIGNATURE_COMPATIBLE, gates)

    if not draft.spec.rollout.required_tags:
        st.conditions = [c for c in st.conditions if c.type != ConditionType.APPROVED]
        return
    if gates.version is not None and gates.unapproved:
        before = st.condition(ConditionType.APPROVED)
        message = f"version {gates.version} waits for {', '.join(gates.unapproved)}"
        draft.set_condition(ConditionType.APPROVED, False, Reason.WAITING_FOR_APPROVAL, message)
        if before is None or before.is_true or before.message != message:
            draft.post(EventType.NORMAL, Reason.WAITING_FOR_APPROVAL, message)
    elif gates.version is not None:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(draft.spec.rollout.required_tags.items()))
        draft.set_condition(
            ConditionType.APPROVED, True, Reason.APPROVED, f"version {gates.version}: {tags}"
        )
    _reopen(draft, ConditionType.APPROVED, gates)


def _reopen(draft: _Draft, type_: ConditionType, gates: Gates) -> None:
    """No candidate to check any more: a gate that was shut is open again."""
    existing = draft.status.condition(type_)
    if gates.version is None and existing is not None and not existing.is_true:
        draft.set_condition(type_, True, Reason.AS_EXPECTED, "no version waits to roll out")


def _set_kstatus_conditions(
    draft: _Draft,
    target: _Target,
    rolling: bool,
    stall: tuple[Reason, str] | None,
    problem: RegistryProblem | None,
    waiting: bool,
    aborted: str | None,
) -> None:
    """Reconciling, Stalled and Ready, by kstatus's rules: it reports Failed only when a
    person must act (Stalled), InProgress only while progress is being made (Reconciling),
    Current otherwise. A rollback after a failed rollout is progress, then a stall."""
    st = draft.status
    if rolling:
        reconciling = (Reason.ROLLING_OUT, st.message)
    elif waiting:  # for a person's approval: no progress, and no failure either
        reconciling = (Reason.IDLE, "")
    elif target.version is None and stall is None:
        reason = problem.kind if problem is not None else Reason.RESOLVING
        reconciling = (reason, f"resolving {draft.spec.model_uri}: {st.message}")
    else:
        reconciling = (Reason.IDLE, "")
    draft.set_condition(ConditionType.RECONCILING, reconciling[0] is not Reason.IDLE, *reconciling)
    stalled = stall if stall is not None else (Reason.AS_EXPECTED, "")
    draft.set_condition(ConditionType.STALLED, stall is not None, *stalled)

    # Ready: the pinned version serves as the spec asks; also while paused (a choice) and
    # while the registry is unreachable (serving is intact).
    if stall is not None:
        ready = (False, stall[0])
    elif waiting and target.version is None:
        ready = (False, Reason.WAITING_FOR_APPROVAL)
    elif rolling or target.version is None:
        ready = (False, Reason.ROLLING_OUT if rolling else Reason.RESOLVING)
    elif draft.spec.paused:
        ready = (True, Reason.PAUSED)
    elif aborted is not None:  # a person's choice, as asked: kstatus Current
        ready = (True, Reason.ROLLOUT_ABORTED)
    elif problem is not None:
        ready = (True, problem.kind)
    elif waiting:
        ready = (True, Reason.WAITING_FOR_APPROVAL)
    else:
        ready = (True, Reason.SERVING)
    draft.set_condition(ConditionType.READY, ready[0], ready[1], st.message)


def status_to_store(
    stored: ModelDeploymentStatus, new: ModelDeploymentStatus, refresh_seconds: float
) -> ModelDeploymentStatus | None:
    """The status to write after a pass that produced `new`, or None to write nothing.

    A steady resource only moves `lastResolvedTime` on each pass; writing that every
    interval would make the status of every resource the main load on the API server. It
    is written once it is `refresh_seconds` newer than the stored one; other changes at once."""
    if new.model_dump(exclude=_VOLATILE) != stored.model_dump(exclude=_VOLATILE):
        return new
    if new.last_resolved_time is None or new.last_resolved_time == stored.last_resolved_time:
        return None
    if stored.last_resolved_time is None:
        return new
    age = new.last_resolved_time - stored.last_resolved_time
    return new if age.total_seconds() >= refresh_seconds else None


_VOLATILE = {"last_resolved_time"}


def _record_start(draft: _Draft, pin: PinnedVersion, reason: Reason) -> bool:
    """Open a history entry for a rollout to `pin`; False if that rollout is already open
    (it was recorded but the API server refused its Deployment, so it is being retried)."""
    history = draft.status.history
    latest = history[0] if history else None
    if latest and latest.version == pin.version and latest.outcome is Outcome.PROGRESSING:
        return False
    for entry in history:
        if entry.outcome is Outcome.PROGRESSING:
            entry.outcome, entry.finished_at = Outcome.SUPERSEDED, draft.now
    entry = HistoryEntry(
        version=pin.version,
        run_id=pin.run_id,
        reason=reason,
        started_at=draft.now,
        outcome=Outcome.PROGRESSING,
    )
    history.insert(0, entry)
    del history[draft.spec.history_limit :]
    return True


def _finish(draft: _Draft, version: str | None, outcome: Outcome, why: str = "") -> bool:
    """Close the in-progress history entry of `version` (`why`: what made it fail); False
    when there is none."""
    for entry in draft.status.history:
        if entry.version == version and entry.outcome is Outcome.PROGRESSING:
            entry.outcome, entry.finished_at, entry.message = outcome, draft.now, why
            return True
    return False


def _run_id_of(
    version: str,
    resolved: ResolvedVersion | None,
    observed: ObservedDeployment | None,
    draft: _Draft,
) -> str:
    if resolved is not None and resolved.version == version:
        return resolved.run_id
    if observed is not None and observed.version == version:
        return observed.run_id
    return next((e.run_id for e in draft.status.history if e.version == version), "")


_CONDITION_ORDER: dict[str, int] = {type_: i for i, type_ in enumerate(ConditionType)}


def _set_condition(
    st: ModelDeploymentStatus,
    type_: ConditionType,
    value: bool,
    reason: str,
    message: str,
    now: datetime,
) -> bool | None:
    """Set a condition; return its previous truth value (None if it was not set)."""
    status = "True" if value else "False"
    existing = st.condition(type_)
    if existing is None:
        st.conditions.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
            )
        )
        # kstatus takes the first of Reconciling and Stalled that is True: keep Reconciling
        # first, so that a rollback under way is in progress and a stall after it is final.
        st.conditions.sort(key=lambda c: _CONDITION_ORDER.get(c.type, len(_CONDITION_ORDER)))
        return None
    previous = existing.is_true
    if existing.status != status:
        existing.last_transition_time = now
    existing.status, existing.reason, existing.message = status, reason, message
    return previous


def invalid_spec(
    status: ModelDeploymentStatus, generation: int, problems: str, now: datetime
) -> Decision:
    """A spec the CRD schema let through but the models refuse (the schema cannot say
    everything): Degraded, reported once, nothing applied."""
    seen = status.model_copy(update={"observed_generation": generation})
    return _degraded(status, seen, Reason.INVALID_SPEC, f"invalid spec: {problems}", now, [])


def refused(
    previous: ModelDeploymentStatus, decision: Decision, kind: str, message: str, now: datetime
) -> Decision:
    """The API server refused a rendered child, `kind` (a Deployment with an invalid env entry
    or resource quantity, say): nothing changed in the cluster, so report that instead of a
    rollout."""
    events = [e for e in decision.events if e.reason is not Reason.ROLLOUT_STARTED]
    return _degraded(
        previous,
        decision.status,
        Reason.DEPLOYMENT_REFUSED,
        f"the API server refused the {kind}: {message}",
        now,
        events,
    )


def name_clash(previous: ModelDeploymentStatus, message: str, now: datetime) -> Decision:
    """A child's name is held by an object aliasop does not control here: nothing is applied
    until it is freed."""
    return _degraded(previous, previous, Reason.NAME_CLASH, message, now, [])


def api_failing(previous: ModelDeploymentStatus, message: str, now: datetime) -> Decision:
    """The resource's Kubernetes API calls keep failing (a ResourceQuota, a full Service IP
    range, an API server in trouble): say so, as the retries go on. Nothing is applied."""
    return _degraded(
        previous,
        previous,
        Reason.KUBERNETES_API_ERROR,
        f"Kubernetes API calls keep failing, retrying: {message}",
        now,
        [],
    )


def _degraded(
    previous: ModelDeploymentStatus,
    status: ModelDeploymentStatus,
    reason: Reason,
    message: str,
    now: datetime,
    events: list[Event],
) -> Decision:
    """`status`, Degraded and Stalled for `reason` (nothing changes until a person acts);
    a Warning Event unless `previous` already was."""
    st = status.model_copy(deep=True)
    now = now.replace(microsecond=0)
    st.phase, st.message = Phase.DEGRADED, message
    before = previous.condition(ConditionType.DEGRADED)
    _set_condition(st, ConditionType.DEGRADED, True, reason, message, now)
    _set_condition(st, ConditionType.STALLED, True, reason, message, now)
    _set_condition(st, ConditionType.RECONCILING, False, Reason.IDLE, "", now)
    _set_condition(st, ConditionType.READY, False, reason, message, now)
    for condition in st.conditions:
        condition.observed_generation = st.observed_generation
    if before is None or before.reason != reason or not before.is_true:
        events = [*events, Event(EventType.WARNING, reason, message)]
    return Decision(status=st, pin=None, events=events)
