"""Canary decisions: where a canary stands + what its two Deployments show + the clock -> its
next state, and the replica counts of both sides.

Pure. Weight is a replica ratio (Argo Rollouts' rule without a service mesh): at weight w the
canary Deployment runs ceil(w% x replicas) pods of the new version and the stable one the
rest, both behind the resource's Service. A side grows at once and shrinks only once the pods
it makes room for are available on the other side, so available pods across both never drop
below `spec.replicas`. The steps run in order; each step's state (when it started, when its
pause ends, its analysis' measurements) is kept in `status.canary`, so that a restarted
operator resumes the same step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aliasop import analysis
from aliasop.analysis_models import AnalysisPhase, AnalysisStep
from aliasop.deployments import ObservedDeployment
from aliasop.domain import MAIN, Requests
from aliasop.events import Event, EventType
from aliasop.models import (
    PROMOTE_ANNOTATION,
    CanaryPhase,
    CanaryStatus,
    CanaryStep,
    ModelDeploymentSpec,
    Reason,
)


def canary_pods(weight: int, replicas: int) -> int:
    """Pods of the canary at `weight` percent of `replicas`: rounded up, so any weight above 0
    runs at least one."""
    return math.ceil(weight * replicas / 100)


def ready_pods(observed: ObservedDeployment | None, version: str) -> int:
    """Available pods of `version` in a Deployment: 0 while it still rolls from another version
    (an available pod might be an old one), or the controller has not seen its template."""
    if observed is None or observed.version != version or not observed.up_to_date:
        return 0
    if observed.replicas != observed.updated_replicas:
        return 0
    return observed.available_replicas


@dataclass(frozen=True)
class Scale:
    """Replicas to apply to each side."""

    stable: int
    canary: int


def settled(observed: ObservedDeployment | None, version: str, variant: str | None = None) -> bool:
    """The Deployment runs `version` (as `variant`, when given: the main side's pods gain or
    lose the label as sides come and go) with every pod on its template and available, so
    that scaling it down removes available pods it does not need and nothing else. Scaling
    down one that rolls (or is about to) is not safe: the Deployment controller scales its
    ReplicaSets in proportion, old available pods with new unready ones, whatever its
    maxUnavailable."""
    if observed is None or observed.version != version or not observed.rolled_out:
        return False
    return variant is None or observed.variant == variant


def scale(
    replicas: int,
    canary_wanted: int,
    stable: ObservedDeployment | None,
    stable_version: str,
    canary: ObservedDeployment | None,
    canary_version: str,
) -> Scale:
    """Both sides towards `canary_wanted` canary pods out of `replicas`, never below
    `replicas` available pods: each side shrinks only once the other has its share available,
    and only while it is itself settled (see `settled`), whatever the timing of the pods."""
    stable_wanted = replicas - canary_wanted
    stable_now = stable.desired_replicas if stable is not None else replicas
    canary_now = canary.desired_replicas if canary is not None else 0
    # A side that does not exist yet has no pods to lose: it is created at its share.
    stable_may_shrink = stable is None or settled(stable, stable_version, MAIN)
    canary_may_shrink = canary is None or settled(canary, canary_version)
    stable_pods = stable_wanted
    if ready_pods(canary, canary_version) < canary_wanted or not stable_may_shrink:
        stable_pods = max(stable_wanted, stable_now)
    canary_pods_ = canary_wanted
    if ready_pods(stable, stable_version) < stable_wanted or not canary_may_shrink:
        canary_pods_ = max(canary_wanted, canary_now)
    return Scale(stable=stable_pods, canary=canary_pods_)


def drain(
    replicas: int, stable: ObservedDeployment | None, canary: ObservedDeployment | None
) -> int:
    """Canary pods with no canary in flight (promoted, aborted): none, once the stable side
    has rolled out with all its pods available; until then, as many as it has."""
    if canary is None:
        return 0
    if stable is not None and stable.rolled_out and stable.available_replicas >= replicas:
        return 0
    return canary.desired_replicas


def current_step(spec: ModelDeploymentSpec, state: CanaryStatus) -> CanaryStep | None:
    """The step under way; None once promoting (or when the spec lost steps meanwhile)."""
    index = state.step - 1
    if state.phase is CanaryPhase.PROMOTING or index >= len(spec.rollout.steps):
        return None
    return spec.rollout.steps[index]


def analysis_under_way(
    spec: ModelDeploymentSpec, state: CanaryStatus | None
) -> AnalysisStep | None:
    """The analysis step whose measurements are due to be taken (by the reconciler, before it
    decides), if the step under way is one and its analysis is still running."""
    if state is None or state.analysis is None or state.analysis.phase.completed:
        return None
    step = current_step(spec, state)
    return step.analysis if step is not None else None


def describe(step: CanaryStep) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.pause is not None:
        seconds = step.pause.seconds
        return f"pause {seconds}s" if seconds is not None else "pause until promoted"
    assert step.analysis is not None
    names = ", ".join(metric.name for metric in step.analysis.metrics)
    return f"analysis of {names}"


def _enter(
    spec: ModelDeploymentSpec, state: CanaryStatus, number: int, now: datetime
) -> CanaryStatus:
    """`state` at the start of step `number` (from 1); past the last step: promoting."""
    steps = spec.rollout.steps
    update: dict[str, object] = {
        "step": number,
        "steps": len(steps),
        "step_started_at": now,
        "pause_until": None,
        "analysis": None,
    }
    if number > len(steps):
        update["phase"] = CanaryPhase.PROMOTING
        return state.model_copy(update=update)
    step = steps[number - 1]
    if step.set_weight is not None:
        update.update(phase=CanaryPhase.PROGRESSING, weight=step.set_weight)
    elif step.pause is not None:
        update["phase"] = CanaryPhase.PAUSED
        if step.pause.seconds is not None:
            update["pause_until"] = now + timedelta(seconds=step.pause.seconds)
    else:
        assert step.analysis is not None
        update.update(phase=CanaryPhase.ANALYSING, analysis=analysis.start(step.analysis, now))
    return state.model_copy(update=update)


def start(
    spec: ModelDeploymentSpec, version: str, run_id: str, stable_version: str, now: datetime
) -> CanaryStatus:
    """A canary of `version` beside `stable_version`, at its first step."""
    state = CanaryStatus(
        version=version,
        run_id=run_id,
        stable_version=stable_version,
        step=1,
        steps=len(spec.rollout.steps),
        phase=CanaryPhase.PROGRESSING,
        step_started_at=now,
    )
    return _enter(spec, state, 1, now)


@dataclass
class Progress:
    """What a canary's pass came to."""

    state: CanaryStatus
    events: list[Event] = field(default_factory=list)
    abort: str | None = None  # why the canary fails: it is aborted, the stable side kept
    wake_at: datetime | None = None  # when to look again, if not before

    @property
    def promoting(self) -> bool:
        return self.state.phase is CanaryPhase.PROMOTING


def advance(
    spec: ModelDeploymentSpec,
    state: CanaryStatus,
    stable: ObservedDeployment | None,
    canary: ObservedDeployment | None,
    asked: Requests,
    now: datetime,
) -> Progress:
    """Move `state` through every step that is done: a weight whose pods are there, a pause
    that is over (or promoted: `asked.promote` names its version), an analysis that passed;
    or past every step left when `asked.promote_full` names its version. A failed analysis,
    or canary pods that miss the progress deadline, abort it."""
    progress = Progress(state)
    if asked.promote_full == state.version and state.phase is not CanaryPhase.PROMOTING:
        progress.state = _enter(spec, state, len(spec.rollout.steps) + 1, now)
        progress.events.append(_step_event(spec, progress.state))
        return progress
    if (
        canary is not None
        and canary.version == state.version
        and canary.up_to_date
        and canary.deadline_exceeded
    ):
        progress.abort = (
            f"the canary of version {state.version} did not become available within "
            f"{spec.rollout.progress_deadline_seconds}s"
        )
        return progress
    replicas = spec.replicas or 0
    for _ in range(len(spec.rollout.steps) + 1):
        step = current_step(spec, progress.state)
        if step is None:
            break
        done, why_not = _step_done(
            step, progress.state, replicas, stable, canary, asked.promote, now
        )
        if why_not is not None:
            progress.abort = why_not
            return progress
        if not done:
            break
        progress.state = _enter(spec, progress.state, progress.state.step + 1, now)
        progress.events.append(_step_event(spec, progress.state))
    progress.wake_at = _wake_at(spec, progress.state)
    return progress


def _step_done(
    step: CanaryStep,
    state: CanaryStatus,
    replicas: int,
    stable: ObservedDeployment | None,
    canary: ObservedDeployment | None,
    promoted: str,
    now: datetime,
) -> tuple[bool, str | None]:
    """Whether `step` is done, and why the canary fails at it (None: it does not)."""
    if step.set_weight is not None:
        wanted = canary_pods(state.weight, replicas)
        stable_pods = replicas - wanted
        shrunk = stable is None or (
            stable.desired_replicas == stable_pods and stable.replicas <= stable_pods
        )
        return ready_pods(canary, state.version) >= wanted and shrunk, None
    if step.pause is not None:
        if state.pause_until is not None:
            return now >= state.pause_until, None
        return promoted == state.version, None
    assert step.analysis is not None
    run = state.analysis
    if run is None:
        return False, None
    phase, message = analysis.assess(step.analysis, run)
    if phase.aborts:
        return False, f"the analysis of version {state.version} ended {phase}: {message}"
    return phase is AnalysisPhase.SUCCESSFUL, None


def _step_event(spec: ModelDeploymentSpec, state: CanaryStatus) -> Event:
    if state.phase is CanaryPhase.PROMOTING:
        return Event(
            EventType.NORMAL,
            Reason.CANARY_PROMOTED,
            f"version {state.version} passed every canary step: the stable Deployment moves to it",
        )
    step = spec.rollout.steps[state.step - 1]
    return Event(
        EventType.NORMAL,
        Reason.CANARY_STEP,
        f"canary of version {state.version}: step {state.step}/{state.steps}, {describe(step)}",
    )


def _wake_at(spec: ModelDeploymentSpec, state: CanaryStatus) -> datetime | None:
    """When the step under way may be done without anything else happening: its pause ends,
    or its next measurement is due."""
    if state.pause_until is not None:
        return state.pause_until
    step = analysis_under_way(spec, state)
    if step is not None and state.analysis is not None:
        return analysis.next_due(step, state.analysis)
    return None


def summary(state: CanaryStatus) -> str:
    """The canary's state in one line, for status.message."""
    where = f"canary of version {state.version}: step {state.step}/{state.steps}"
    if state.phase is CanaryPhase.PROMOTING:
        return f"canary of version {state.version} passed: promoting it"
    if state.phase is CanaryPhase.PAUSED:
        until = (
            f"until {state.pause_until:%H:%M:%S}Z"
            if state.pause_until is not None
            else f"until promoted ({PROMOTE_ANNOTATION}={state.version})"
        )
        return f"{where}, weight {state.weight}%, paused {until}"
    if state.phase is CanaryPhase.ANALYSING:
        return f"{where}, weight {state.weight}%, analysing"
    return f"{where}, scaling to weight {state.weight}%"
