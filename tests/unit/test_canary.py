"""Canary decisions (aliasop.canary, through aliasop.rollout.decide), pure.

`Sim` plays the Deployment controller in the simplest way that still lets capacity drop: the
replicas a decision applies are there at the next pass, new pods available only from the pass
after (when `ready`), and pods scaled away gone at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aliasop import canary
from aliasop.analysis import measured, record
from aliasop.analysis_models import (
    AnalysisPhase,
    AnalysisRun,
    AnalysisStep,
)
from aliasop.deployments import ObservedDeployment
from aliasop.domain import NOTHING_ASKED, Requests
from aliasop.models import (
    CanaryPhase,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    OnFailure,
    Outcome,
    Phase,
    Reason,
    ResolvedVersion,
)
from aliasop.rollout import Decision, decide

from observed import observed

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ANALYSIS = {
    "interval": 10,
    "count": 2,
    "metrics": [
        {
            "name": "error-rate",
            "web": {"url": "http://scorer/{{version}}", "jsonPath": "$.v"},
            "thresholdRange": {"max": 0.05},
        }
    ],
}


def spec(*steps: dict[str, Any], replicas: int = 4, **fields: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": "models:/bikes@champion",
            "replicas": replicas,
            "rollout": {"strategy": "Canary", "steps": list(steps), **fields},
        }
    )


@dataclass
class Sim:
    """The two Deployments and the resource's status, pass after pass."""

    spec: ModelDeploymentSpec
    stable: ObservedDeployment | None = None
    canary: ObservedDeployment | None = None
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    now: datetime = T0
    alias: str = "1"
    promoted: str = ""
    decisions: list[Decision] = field(default_factory=list)

    def settle(self) -> None:
        """Every pod applied is available: the state between steps."""
        for side in ("stable", "canary"):
            seen = getattr(self, side)
            if seen is not None:
                setattr(self, side, observed(seen.version, seen.desired_replicas))

    def available(self) -> int:
        return sum(d.available_replicas for d in (self.stable, self.canary) if d is not None)

    def step(self, seconds: float = 0, settle: bool = True) -> Decision:
        self.now += timedelta(seconds=seconds)
        decision = decide(
            self.spec,
            1,
            self.status,
            ResolvedVersion(self.alias, f"run{self.alias}"),
            self.stable,
            self.now,
            canary_deployment=self.canary,
            asked=Requests(promote=self.promoted),
        )
        self.decisions.append(decision)
        self.status = decision.status
        if decision.pin is not None:
            replicas = decision.stable_replicas
            if replicas is None:
                replicas = self.spec.replicas or 0
            self.stable = _rescale(self.stable, decision.pin.version, replicas)
        if decision.canary is not None:
            self.canary = _rescale(
                self.canary, decision.canary.pin.version, decision.canary.replicas
            )
        if settle:
            self.settle()
        return decision

    def serving(self, version: str) -> None:
        """The state after `version` was created and rolled out."""
        self.alias = version
        self.step()
        self.step()
        assert self.status.serving_version == version


def _rescale(seen: ObservedDeployment | None, version: str, replicas: int) -> ObservedDeployment:
    """A Deployment given `version` and `replicas`: pods of a new version are not yet
    available; pods scaled away are gone at once."""
    if seen is None or seen.version != version:
        old = seen.available_replicas if seen is not None else 0
        # A rolling update with maxUnavailable 0: the old pods serve until new ones are ready.
        return replace(
            observed(version, replicas, available=min(old, replicas)),
            updated_replicas=0,
            replicas=replicas + (seen.replicas if seen is not None else 0),
        )
    available = min(seen.available_replicas, replicas)
    return replace(
        seen,
        desired_replicas=replicas,
        replicas=replicas,
        updated_replicas=replicas,
        available_replicas=available,
    )


def reasons(decision: Decision) -> list[Reason]:
    return [event.reason for event in decision.events]


def test_canary_pods_are_the_weight_of_replicas_rounded_up() -> None:
    assert [canary.canary_pods(w, 4) for w in (0, 1, 25, 26, 50, 100)] == [0, 1, 1, 2, 2, 4]
    assert canary.canary_pods(10, 3) == 1


def test_a_side_shrinks_only_once_the_other_has_its_share_available() -> None:
    stable, fresh = observed("1", 4), observed("2", 1, available=0)
    assert canary.scale(4, 1, stable, "1", None, "2") == canary.Scale(stable=4, canary=1)
    assert canary.scale(4, 1, stable, "1", fresh, "2") == canary.Scale(stable=4, canary=1)
    ready = observed("2", 1)
    assert canary.scale(4, 1, stable, "1", ready, "2") == canary.Scale(stable=3, canary=1)
    # Weight back down: the stable side grows first, the canary waits for it.
    small = observed("1", 2)
    assert canary.scale(4, 1, small, "1", observed("2", 2), "2") == canary.Scale(3, 2)
    assert canary.scale(4, 1, observed("1", 3), "1", observed("2", 2), "2") == canary.Scale(3, 1)


def test_the_first_rollout_is_whole_and_an_alias_move_starts_a_canary() -> None:
    sim = Sim(spec({"setWeight": 25}, {"pause": {"seconds": 60}}))
    sim.serving("1")
    assert sim.status.canary is None and sim.canary is None

    sim.alias = "2"
    decision = sim.step(settle=False)
    state = sim.status.canary
    assert state is not None
    assert (state.version, state.stable_version, state.step, state.weight) == ("2", "1", 1, 25)
    assert reasons(decision) == [Reason.ALIAS_MOVED, Reason.ROLLOUT_STARTED]
    assert decision.pin is not None and decision.pin.version == "1"  # the stable side stays
    assert decision.canary is not None and decision.canary.replicas == 1
    assert decision.stable_replicas == 4  # not down before the canary pod is available
    assert sim.status.phase is Phase.PROGRESSING
    assert sim.status.history[0].version == "2"
    assert sim.status.history[0].outcome is Outcome.PROGRESSING


def test_every_step_in_turn_then_promotion_never_below_replicas() -> None:
    sim = Sim(
        spec(
            {"setWeight": 25},
            {"pause": {"seconds": 60}},
            {"setWeight": 50},
            {"pause": {"seconds": 30}},
        )
    )
    sim.serving("1")
    sim.alias = "2"
    counts: list[tuple[int, int]] = []
    low = 4
    for seconds in [0] * 4 + [59, 1] + [0] * 3 + [30] + [0] * 6:
        sim.step(seconds, settle=False)
        low = min(low, sim.available())
        sim.settle()
        assert sim.stable is not None
        counts.append(
            (sim.stable.desired_replicas, sim.canary.desired_replicas if sim.canary else 0)
        )
    assert low >= 4
    assert (3, 1) in counts and (2, 2) in counts
    assert counts[-1] == (4, 0)
    assert sim.stable is not None and sim.stable.version == "2"
    assert sim.status.canary is None
    assert sim.status.serving_version == "2"
    assert sim.status.history[0].outcome is Outcome.SUCCEEDED
    events = [r for d in sim.decisions for r in reasons(d)]
    assert events.count(Reason.CANARY_STEP) == 3
    assert events.count(Reason.CANARY_PROMOTED) == 1
    assert events.count(Reason.ROLLOUT_SUCCEEDED) == 2  # version 1 at creation, then 2


def test_a_pause_is_honoured_and_resumes_from_status_after_a_restart() -> None:
    sim = Sim(spec({"setWeight": 25}, {"pause": {"seconds": 60}}, {"setWeight": 50}))
    sim.serving("1")
    sim.alias = "2"
    for _ in range(3):
        sim.step()
    state = sim.status.canary
    assert state is not None and state.phase is CanaryPhase.PAUSED
    assert state.pause_until == sim.now + timedelta(seconds=60)
    wake = sim.decisions[-1].wake_at
    assert wake == state.pause_until

    # A restarted operator reads the status back: the same step, the same end of the pause.
    sim.status = ModelDeploymentStatus.model_validate(sim.status.model_dump(mode="json"))
    sim.step(59)
    assert sim.status.canary is not None and sim.status.canary.step == 2
    sim.step(1)
    assert sim.status.canary is not None and sim.status.canary.step == 3
    assert sim.status.canary.weight == 50


def test_a_pause_without_seconds_waits_for_its_version_to_be_promoted() -> None:
    sim = Sim(spec({"setWeight": 50}, {"pause": {}}))
    sim.serving("1")
    sim.alias = "2"
    for _ in range(3):
        sim.step(3600)
    state = sim.status.canary
    assert state is not None and state.phase is CanaryPhase.PAUSED and state.pause_until is None
    assert "aliasop.io/promote=2" in sim.status.message
    sim.promoted = "1"  # an old promotion names another version: no effect
    sim.step()
    assert sim.status.canary is not None and sim.status.canary.phase is CanaryPhase.PAUSED
    sim.promoted = "2"
    sim.step()
    assert sim.status.canary is not None
    assert sim.status.canary.phase is CanaryPhase.PROMOTING


def _analysed(run: AnalysisRun, step: AnalysisStep, value: float, at: datetime) -> AnalysisRun:
    metric = step.metrics[0]
    return record(step, run, measured(metric, value, at))


def test_a_passing_analysis_promotes_and_a_failing_one_aborts_with_the_stable_side_kept() -> None:
    for value, promoted in ((0.01, True), (0.5, False)):
        sim = Sim(spec({"setWeight": 25}, {"analysis": ANALYSIS}))
        sim.serving("1")
        sim.alias = "2"
        for _ in range(3):  # canary pod up, stable pod down, then the step is done
            sim.step()
        state = sim.status.canary
        assert state is not None and state.phase is CanaryPhase.ANALYSING
        assert sim.decisions[-1].wake_at == sim.now  # the first measurements are due at once
        step = AnalysisStep.model_validate(ANALYSIS)
        assert state.analysis is not None
        run = _analysed(state.analysis, step, value, sim.now)
        if promoted:
            run = _analysed(run, step, value, sim.now + timedelta(seconds=10))
        assert run.phase is (AnalysisPhase.SUCCESSFUL if promoted else AnalysisPhase.FAILED)
        sim.status = sim.status.model_copy(
            update={"canary": state.model_copy(update={"analysis": run})}
        )
        decision = sim.step(10, settle=False)
        assert sim.available() >= 4
        if promoted:
            assert sim.status.canary is not None
            assert sim.status.canary.phase is CanaryPhase.PROMOTING
            assert decision.pin is not None and decision.pin.version == "2"
            continue
        assert sim.status.canary is None
        assert sim.status.failed_version == "2"
        assert sim.status.phase is Phase.DEGRADED
        assert "error-rate failed 1 of 1" in sim.status.message
        assert reasons(decision)[-1] is Reason.ROLLOUT_FAILED
        assert decision.pin is not None and decision.pin.version == "1"
        assert decision.stable_replicas is None  # back to spec.replicas ...
        assert decision.canary is not None and decision.canary.replicas == 1  # ... first
        sim.settle()
        sim.step()
        assert sim.canary is not None and sim.canary.desired_replicas == 0
        assert sim.stable is not None and (sim.stable.version, sim.stable.desired_replicas) == (
            "1",
            4,
        )
        assert sim.status.history[0].outcome is Outcome.FAILED
        sim.step()  # not tried again while the alias stays
        assert sim.status.canary is None


def test_an_abort_moves_the_alias_back_when_the_spec_says_so() -> None:
    sim = Sim(spec({"setWeight": 25}, {"analysis": ANALYSIS}, onFailure="RevertAlias"))
    sim.serving("1")
    sim.alias = "2"
    for _ in range(3):
        sim.step()
    state = sim.status.canary
    assert state is not None and state.analysis is not None
    step = AnalysisStep.model_validate(ANALYSIS)
    failed = _analysed(state.analysis, step, 1.0, sim.now)
    sim.status = sim.status.model_copy(
        update={"canary": state.model_copy(update={"analysis": failed})}
    )
    assert sim.step().revert_alias_to == "1"
    assert sim.spec.rollout.on_failure is OnFailure.REVERT_ALIAS


def test_canary_pods_that_miss_the_deadline_abort_it() -> None:
    sim = Sim(spec({"setWeight": 25}, {"pause": {}}))
    sim.serving("1")
    sim.alias = "2"
    sim.step(settle=False)
    assert sim.canary is not None
    sim.canary = replace(sim.canary, deadline_exceeded=True)
    sim.step(settle=False)
    assert sim.status.canary is None and sim.status.failed_version == "2"
    assert "did not become available within 600s" in sim.status.message


def test_an_alias_moved_on_restarts_the_canary_and_one_moved_back_stops_it() -> None:
    sim = Sim(spec({"setWeight": 25}, {"pause": {}}))
    sim.serving("1")
    sim.alias = "2"
    sim.step()
    sim.step()
    sim.alias = "3"
    decision = sim.step()
    state = sim.status.canary
    assert state is not None and (state.version, state.step) == ("3", 1)
    assert Reason.CANARY_RESTARTED in reasons(decision)
    assert [(e.version, e.outcome) for e in sim.status.history[:2]] == [
        ("3", Outcome.PROGRESSING),
        ("2", Outcome.SUPERSEDED),
    ]
    assert decision.canary is not None and decision.canary.pin.version == "3"

    sim.alias = "1"
    decision = sim.step()
    assert sim.status.canary is None and sim.status.failed_version is None
    assert Reason.CANARY_ABORTED in reasons(decision)
    assert sim.status.history[0].outcome is Outcome.SUPERSEDED
    sim.step()
    assert sim.canary is not None and sim.canary.desired_replicas == 0
    assert sim.status.phase is Phase.READY


def test_current_step_and_the_analysis_under_way() -> None:
    md = spec({"setWeight": 25}, {"analysis": ANALYSIS})
    state = canary.start(md, "2", "run2", "1", T0)
    assert canary.current_step(md, state) == md.rollout.steps[0]
    assert canary.analysis_under_way(md, state) is None
    second = canary.advance(md, state, observed("1", 3), observed("2", 1), NOTHING_ASKED, T0).state
    assert second.step == 2
    assert canary.analysis_under_way(md, second) == md.rollout.steps[1].analysis
    assert second.analysis is not None
    assert second.analysis.phase is AnalysisPhase.RUNNING


def test_a_canary_needs_replicas_and_steps_and_each_step_is_one_thing() -> None:
    with pytest.raises(ValueError, match="needs replicas"):
        ModelDeploymentSpec.model_validate(
            {"model": "models:/m@a", "rollout": {"strategy": "Canary", "steps": [{"pause": {}}]}}
        )
    with pytest.raises(ValueError, match="at least one step"):
        spec()
    with pytest.raises(ValueError, match="exactly one of setWeight, pause and analysis"):
        spec({"setWeight": 10, "pause": {}})
    with pytest.raises(ValueError, match="exactly one of setWeight, pause and analysis"):
        spec({})


def test_a_stable_deployment_deleted_mid_canary_is_put_back_at_its_version() -> None:
    sim = Sim(spec({"setWeight": 25}, {"pause": {}}))
    sim.serving("1")
    sim.alias = "2"
    for _ in range(3):
        sim.step()
    sim.stable = None  # someone deleted it
    decision = sim.step(settle=False)
    assert decision.pin is not None and decision.pin.version == "1"
    assert decision.stable_replicas == 3  # its share
    assert sim.status.canary is not None and sim.status.canary.version == "2"
