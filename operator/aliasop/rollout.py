"""Pure rollout decisions: what the registry says + what the Deployment shows -> what to do.

`decide` never performs I/O. It returns the next status, the version to render (or None to
leave the Deployment alone) and the Events worth posting. Events follow transitions only, so
calling `decide` again with the same inputs posts nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aliasop.builders import RUN_ID_ANNOTATION, VERSION_LABEL, PinnedVersion
from aliasop.models import (
    Condition,
    HistoryEntry,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Outcome,
    Phase,
    ProblemKind,
    RegistryProblem,
    ResolvedVersion,
)

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
REGISTRY_AVAILABLE = "RegistryAvailable"


@dataclass(frozen=True)
class ObservedDeployment:
    """The parts of the child Deployment that rollout decisions read."""

    version: str
    run_id: str
    generation: int
    observed_generation: int
    desired_replicas: int
    replicas: int
    updated_replicas: int
    available_replicas: int
    deadline_exceeded: bool

    @property
    def up_to_date(self) -> bool:
        """The Deployment controller has seen the current template."""
        return self.observed_generation >= self.generation

    @property
    def rolled_out(self) -> bool:
        """Every pod runs the current template and is available; no old pod is left."""
        return (
            self.up_to_date
            and self.updated_replicas >= self.desired_replicas
            and self.replicas == self.updated_replicas
            and self.available_replicas >= self.desired_replicas
        )


def observe_deployment(deployment: dict[str, Any]) -> ObservedDeployment:
    """Read an apps/v1 Deployment (as a camelCase dict) into an ObservedDeployment."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    progressing: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    return ObservedDeployment(
        version=(template_meta.get("labels") or {}).get(VERSION_LABEL, ""),
        run_id=(template_meta.get("annotations") or {}).get(RUN_ID_ANNOTATION, ""),
        generation=meta.get("generation") or 0,
        observed_generation=status.get("observedGeneration") or 0,
        desired_replicas=spec.get("replicas", 1),
        replicas=status.get("replicas") or 0,
        updated_replicas=status.get("updatedReplicas") or 0,
        available_replicas=status.get("availableReplicas") or 0,
        deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
    )


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: ModelDeploymentStatus
    pin: PinnedVersion | None  # the version to render; None leaves the Deployment untouched
    events: list[Event] = field(default_factory=list)


def decide(
    spec: ModelDeploymentSpec,
    generation: int,
    status: ModelDeploymentStatus,
    resolution: ResolvedVersion | RegistryProblem,
    observed: ObservedDeployment | None,
    now: datetime,
) -> Decision:
    st = status.model_copy(deep=True)
    st.observed_generation = generation
    events: list[Event] = []
    stamp = _stamp(now)
    uri = spec.model_uri

    problem = resolution if isinstance(resolution, RegistryProblem) else None
    resolved = resolution if isinstance(resolution, ResolvedVersion) else None
    if resolved is not None:
        if st.alias_version is not None and st.alias_version != resolved.version:
            events.append(
                Event(
                    "Normal",
                    "AliasMoved",
                    f"{uri} moved from version {st.alias_version} to {resolved.version}",
                )
            )
        if st.failed_version is not None and resolved.version != st.failed_version:
            st.failed_version = None  # the alias moved away: the version may be tried again
        st.alias_version = resolved.version
        st.last_resolved_time = stamp

    current = observed.version if observed is not None else None
    if observed is not None and current not in (st.target_version, st.serving_version):
        # The Deployment runs a version the status never recorded: the operator stopped
        # between applying it and writing status. Record that rollout now.
        pinned = PinnedVersion(observed.version, observed.run_id)
        _record_start(st, pinned, "Adopted", stamp, spec.history_limit)
    target = current
    start_reason: str | None = None
    failure: str | None = None

    if (
        resolved is not None
        and not spec.paused
        and resolved.version not in (st.failed_version, current)
    ):
        target = resolved.version
        start_reason = "Created" if current is None else "AliasMoved"

    if (
        observed is not None
        and target == current
        and observed.up_to_date
        and observed.deadline_exceeded
        and current != st.last_good_version
    ):
        failure = (
            f"version {current} did not become available within "
            f"{spec.rollout.progress_deadline_seconds}s"
        )
        if _finish(st, current, Outcome.FAILED, stamp):
            events.append(Event("Warning", "RolloutFailed", failure))
        if spec.rollout.auto_rollback and st.last_good_version is not None:
            st.failed_version = current
            target = st.last_good_version
            start_reason = "Rollback"
            failure += (
                f"; rolled back to version {target}. It is tried again when {uri} moves "
                "away and back"
            )

    pin: PinnedVersion | None = None
    if target is not None and (problem is None or target != current):
        pin = PinnedVersion(target, _run_id_of(target, resolved, observed, st))

    if start_reason is not None and pin is not None:
        if _record_start(st, pin, start_reason, stamp, spec.history_limit):
            source = f"from version {current} " if current is not None else ""
            events.append(
                Event("Normal", "RolloutStarted", f"rolling out {source}to version {pin.version}")
            )
    elif observed is not None and observed.rolled_out and target == current:
        if _finish(st, current, Outcome.SUCCEEDED, stamp) or st.serving_version != current:
            events.append(
                Event(
                    "Normal",
                    "RolloutSucceeded",
                    f"version {current} is serving: {observed.available_replicas} pods available",
                )
            )
        st.serving_version = st.last_good_version = current

    if st.failed_version is not None and failure is None:
        failure = (
            f"version {st.failed_version} failed to roll out; serving version "
            f"{st.serving_version}. It is tried again when {uri} moves away and back"
        )
    st.target_version = target
    rolling = target is not None and (
        target != current or observed is None or not observed.rolled_out
    )
    _set_phase(st, spec, problem, failure, rolling, target, events, stamp)
    return Decision(status=st, pin=pin, events=events)


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
    age = _parse_stamp(new.last_resolved_time) - _parse_stamp(stored.last_resolved_time)
    return new if age.total_seconds() >= refresh_seconds else None


_VOLATILE = {"last_resolved_time"}


def _parse_stamp(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(now: datetime) -> str:
    return now.isoformat(timespec="seconds").replace("+00:00", "Z")


def _record_start(
    st: ModelDeploymentStatus, pin: PinnedVersion, reason: str, stamp: str, limit: int
) -> bool:
    """Open a history entry for a rollout to `pin`; False if that rollout is already open
    (it was recorded but the API server refused its Deployment, so it is being retried)."""
    latest = st.history[0] if st.history else None
    if latest and latest.version == pin.version and latest.outcome is Outcome.PROGRESSING:
        return False
    for entry in st.history:
        if entry.outcome is Outcome.PROGRESSING:
            entry.outcome, entry.finished_at = Outcome.SUPERSEDED, stamp
    entry = HistoryEntry(
        version=pin.version,
        run_id=pin.run_id,
        reason=reason,
        started_at=stamp,
        outcome=Outcome.PROGRESSING,
    )
    st.history.insert(0, entry)
    del st.history[limit:]
    return True


def _finish(st: ModelDeploymentStatus, version: str | None, outcome: Outcome, stamp: str) -> bool:
    """Close the in-progress history entry of `version`; False when there is none."""
    for entry in st.history:
        if entry.version == version and entry.outcome is Outcome.PROGRESSING:
            entry.outcome, entry.finished_at = outcome, stamp
            return True
    return False


def _run_id_of(
    version: str,
    resolved: ResolvedVersion | None,
    observed: ObservedDeployment | None,
    st: ModelDeploymentStatus,
) -> str:
    if resolved is not None and resolved.version == version:
        return resolved.run_id
    if observed is not None and observed.version == version:
        return observed.run_id
    return next((e.run_id for e in st.history if e.version == version), "")


def _set_phase(
    st: ModelDeploymentStatus,
    spec: ModelDeploymentSpec,
    problem: RegistryProblem | None,
    failure: str | None,
    rolling: bool,
    target: str | None,
    events: list[Event],
    stamp: str,
) -> None:
    unreachable = problem is not None and problem.kind is ProblemKind.REGISTRY_UNAVAILABLE
    if problem is not None and unreachable:
        registry = (False, problem.kind.value, problem.message)
    else:
        registry = (True, "Reachable", "MLflow answered the last resolution")

    degraded_reason, degraded_message = "", ""
    if problem is not None and not unreachable:
        degraded_reason, degraded_message = problem.kind.value, problem.message
    elif failure is not None:
        degraded_reason, degraded_message = "RolloutFailed", failure

    if degraded_reason:
        st.phase, st.message = Phase.DEGRADED, degraded_message
    elif spec.paused:
        st.phase = Phase.PAUSED
        st.message = (
            f"paused: alias points at version {st.alias_version}, "
            f"serving version {st.serving_version}"
        )
    elif target is None:
        st.phase = Phase.PENDING
        st.message = problem.message if problem is not None else "waiting for the registry"
    elif rolling:
        st.phase, st.message = Phase.PROGRESSING, f"rolling out version {target}"
    else:
        st.phase, st.message = Phase.READY, f"version {target} is serving"
    if unreachable and st.phase is not Phase.PENDING:
        st.message += f" (registry unavailable: {registry[2]})"

    was_reachable = _set_condition(st, REGISTRY_AVAILABLE, *registry, stamp)
    if was_reachable is not registry[0] and was_reachable is not None:
        if registry[0]:
            events.append(Event("Normal", "RegistryAvailable", "MLflow answers again"))
        else:
            events.append(Event("Warning", "RegistryUnavailable", registry[2]))

    previous = st.condition(DEGRADED)
    was_degraded_for = previous.reason if previous and previous.status == "True" else None
    _set_condition(
        st,
        DEGRADED,
        bool(degraded_reason),
        degraded_reason or "AsExpected",
        degraded_message,
        stamp,
    )
    # RolloutFailed is announced where it happens, with its own message.
    if degraded_reason not in ("", "RolloutFailed", was_degraded_for):
        events.append(Event("Warning", degraded_reason, degraded_message))
    _set_condition(st, PROGRESSING, rolling, "RollingOut" if rolling else "Idle", st.message, stamp)
    _set_condition(st, READY, st.phase is Phase.READY, st.phase.value, st.message, stamp)
    for condition in st.conditions:
        condition.observed_generation = st.observed_generation


def _set_condition(
    st: ModelDeploymentStatus, type_: str, value: bool, reason: str, message: str, stamp: str
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
                last_transition_time=stamp,
            )
        )
        return None
    previous = existing.status == "True"
    if existing.status != status:
        existing.last_transition_time = stamp
    existing.status, existing.reason, existing.message = status, reason, message
    return previous


def refused(
    previous: ModelDeploymentStatus, decision: Decision, message: str, now: datetime
) -> Decision:
    """The API server refused the rendered Deployment (an invalid env entry or resource
    quantity, say): nothing changed in the cluster, so report that instead of a rollout."""
    events = [e for e in decision.events if e.reason != "RolloutStarted"]
    return _degraded(
        previous,
        decision.status,
        "DeploymentRefused",
        f"the API server refused the Deployment: {message}",
        now,
        events,
    )


def api_failing(previous: ModelDeploymentStatus, message: str, now: datetime) -> Decision:
    """The resource's Kubernetes API calls keep failing (a ResourceQuota, a full Service IP
    range, an API server in trouble): say so, as the retries go on. Nothing is applied."""
    return _degraded(
        previous,
        previous,
        "KubernetesApiError",
        f"Kubernetes API calls keep failing, retrying: {message}",
        now,
        [],
    )


def _degraded(
    previous: ModelDeploymentStatus,
    status: ModelDeploymentStatus,
    reason: str,
    message: str,
    now: datetime,
    events: list[Event],
) -> Decision:
    """`status`, Degraded for `reason`; a Warning Event unless `previous` already was."""
    st = status.model_copy(deep=True)
    stamp = _stamp(now)
    st.phase, st.message = Phase.DEGRADED, message
    before = previous.condition(DEGRADED)
    _set_condition(st, DEGRADED, True, reason, message, stamp)
    _set_condition(st, READY, False, st.phase.value, message, stamp)
    if before is None or before.reason != reason or before.status != "True":
        events = [*events, Event("Warning", reason, message)]
    return Decision(status=st, pin=None, events=events)
