"""The rollout's states and transitions, table-driven: state x event -> next state and plan.

Each row starts from a status in a known state (built by passes of `decide`), lets one event
happen (the alias moves, pods turn available, a deadline passes, a promotion, a pause, a
registry outage ...) and checks the state `decide` leads to, the version the main side is
given, the Events, and that the plan keeps spec.replicas available (capacity.check).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from aliasop.builders import ServingDefaults
from aliasop.deployments import ObservedDeployment
from aliasop.domain import CANARY, NOTHING_ASKED, Owner, Requests
from aliasop.models import (
    ConditionType,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Outcome,
    Phase,
    Reason,
    RegistryProblem,
    ResolvedVersion,
)
from aliasop.plan import SeenChildren, plan_children
from aliasop.rollout import Decision, Gates, RolloutState, decide, registry_records, state_of

from capacity import check
from observed import observed

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = Owner(name="bikes", namespace="ml", uid="uid-1")
DEFAULTS = ServingDefaults(image="serving:1", tracking_uri="http://mlflow:5000")
REPLICAS = 4
CANARY_STEPS = {"strategy": "Canary", "steps": [{"setWeight": 25}, {"pause": {}}]}
S = RolloutState


def spec(**fields: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"model": "models:/bikes@champion", "replicas": REPLICAS, **fields}
    )


def at(version: str) -> ResolvedVersion:
    return ResolvedVersion(version, f"run{version}")


def pods(version: str, count: int = REPLICAS, **changes: Any) -> ObservedDeployment:
    """The main side with `count` pods of `version`, all available unless `changes` say."""
    return replace(observed(version, count), **changes)


def rolling(version: str) -> ObservedDeployment:
    return pods(version, replicas=REPLICAS + 1, updated_replicas=1, available_replicas=REPLICAS)


def stuck(version: str) -> ObservedDeployment:
    return replace(rolling(version), deadline_exceeded=True)


def canary_pods(version: str, count: int) -> ObservedDeployment:
    return observed(version, count, variant=CANARY)


@dataclass(frozen=True)
class World:
    """What one pass sees besides the status."""

    spec: ModelDeploymentSpec
    resolution: ResolvedVersion | RegistryProblem
    main: ObservedDeployment | None
    canary: ObservedDeployment | None = None
    asked: Requests = NOTHING_ASKED
    gates: Gates | None = None


def decided(status: ModelDeploymentStatus, world: World) -> Decision:
    decision = decide(
        world.spec,
        1,
        status,
        world.resolution,
        world.main,
        T0,
        gates=world.gates,
        canary_deployment=world.canary,
        asked=world.asked,
    )
    seen = SeenChildren(
        main=world.main, sides={CANARY: world.canary} if world.canary is not None else {}
    )
    check(seen, plan_children(OWNER, world.spec, decision, seen, DEFAULTS), REPLICAS)
    return decision


def passes(*worlds: World) -> ModelDeploymentStatus:
    status = ModelDeploymentStatus()
    for world in worlds:
        status = decided(status, world).status
    return status


# --- the states the rows start from -----------------------------------------------------


def pending() -> ModelDeploymentStatus:
    return ModelDeploymentStatus()


def rolling_out_first() -> ModelDeploymentStatus:
    return passes(World(spec(), at("1"), None))


def serving_one() -> ModelDeploymentStatus:
    return passes(World(spec(), at("1"), None), World(spec(), at("1"), pods("1")))


def rolling_out_two() -> ModelDeploymentStatus:
    return decided(serving_one(), World(spec(), at("2"), pods("1"))).status


def rolling_back() -> ModelDeploymentStatus:
    return decided(rolling_out_two(), World(spec(), at("2"), stuck("2"))).status


def failed_two() -> ModelDeploymentStatus:
    return decided(rolling_back(), World(spec(), at("2"), pods("1"))).status


def canary_spec() -> ModelDeploymentSpec:
    return spec(rollout=CANARY_STEPS)


def canary_paused() -> ModelDeploymentStatus:
    """A canary of version 2 at its pause: 3 stable pods of version 1, 1 canary pod."""
    serving = passes(World(canary_spec(), at("1"), None), World(canary_spec(), at("1"), pods("1")))
    started = decided(serving, World(canary_spec(), at("2"), pods("1"))).status
    weighed = decided(started, World(canary_spec(), at("2"), pods("1"), canary_pods("2", 1))).status
    return decided(weighed, World(canary_spec(), at("2"), pods("1", 3), canary_pods("2", 1))).status


def at_pause(**asked: str) -> World:
    """The cluster while the canary of version 2 is at its pause, and what a person asks."""
    return World(canary_spec(), at("2"), pods("1", 3), canary_pods("2", 1), Requests(**asked))


def promoting() -> ModelDeploymentStatus:
    return decided(canary_paused(), at_pause(promote="2")).status


def aborted_two() -> ModelDeploymentStatus:
    """The rolling update to version 2 aborted, version 1 back."""
    back = decided(rolling_out_two(), World(spec(), at("2"), rolling("2"), asked=ABORT_2)).status
    return decided(back, World(spec(), at("2"), pods("1"), asked=ABORT_2)).status


def canary_aborted() -> ModelDeploymentStatus:
    return decided(canary_paused(), at_pause(abort="2")).status


def retried_and_failed_again() -> ModelDeploymentStatus:
    retried = decided(failed_two(), World(spec(), at("2"), pods("1"), asked=RETRY_2)).status
    back = decided(retried, World(spec(), at("2"), stuck("2"), asked=RETRY_2)).status
    return decided(back, World(spec(), at("2"), pods("1"), asked=RETRY_2)).status


ABORT_2, RETRY_2 = Requests(abort="2"), Requests(retry="2")
UNAPPROVED = Gates("2", unapproved=("stage=prod (is: none)",))
OUTAGE = RegistryProblem(Reason.REGISTRY_UNAVAILABLE, "connection refused")


@dataclass(frozen=True)
class Row:
    start: Callable[[], ModelDeploymentStatus]
    start_state: RolloutState
    event: str
    world: World
    next_state: RolloutState
    pin: str | None  # the version the main side is given; None: left alone
    reasons: tuple[Reason, ...]


ROWS = [
    Row(pending, S.PENDING, "the alias resolves", World(spec(), at("1"), None),
        S.ROLLING_OUT, "1", (Reason.ROLLOUT_STARTED,)),
    Row(pending, S.PENDING, "the registry is down", World(spec(), OUTAGE, None),
        S.PENDING, None, ()),  # an outage is announced once the registry has answered
    Row(pending, S.PENDING, "a gate holds the version",
        World(spec(rollout={"requiredTags": {"stage": "prod"}}), at("2"), None,
              gates=UNAPPROVED),
        S.HELD, None, (Reason.WAITING_FOR_APPROVAL,)),
    Row(rolling_out_first, S.ROLLING_OUT, "its pods turn available",
        World(spec(), at("1"), pods("1")), S.SERVING, "1", (Reason.ROLLOUT_SUCCEEDED,)),
    Row(rolling_out_first, S.ROLLING_OUT, "its pods are still starting",
        World(spec(), at("1"), rolling("1")), S.ROLLING_OUT, "1", ()),
    Row(serving_one, S.SERVING, "nothing happens", World(spec(), at("1"), pods("1")),
        S.SERVING, "1", ()),
    Row(serving_one, S.SERVING, "the alias moves", World(spec(), at("2"), pods("1")),
        S.ROLLING_OUT, "2", (Reason.ALIAS_MOVED, Reason.ROLLOUT_STARTED)),
    Row(serving_one, S.SERVING, "the alias moves to a version a gate holds",
        World(spec(rollout={"requiredTags": {"stage": "prod"}}), at("2"), pods("1"),
              gates=UNAPPROVED),
        S.HELD, "1", (Reason.ALIAS_MOVED, Reason.WAITING_FOR_APPROVAL)),
    Row(serving_one, S.SERVING, "the spec pauses", World(spec(paused=True), at("2"), pods("1")),
        S.PAUSED, "1", (Reason.ALIAS_MOVED,)),
    Row(serving_one, S.SERVING, "the registry is down", World(spec(), OUTAGE, pods("1")),
        S.SERVING, None, (Reason.REGISTRY_UNAVAILABLE,)),
    Row(serving_one, S.SERVING, "the alias moves (Canary strategy)",
        World(canary_spec(), at("2"), pods("1")),
        S.CANARY, "1", (Reason.ALIAS_MOVED, Reason.ROLLOUT_STARTED)),
    Row(rolling_out_two, S.ROLLING_OUT, "its deadline passes",
        World(spec(), at("2"), stuck("2")),
        S.ROLLING_BACK, "1", (Reason.ROLLOUT_FAILED, Reason.ROLLOUT_STARTED)),
    Row(rolling_out_two, S.ROLLING_OUT, "the alias moves on",
        World(spec(), at("3"), rolling("2")),
        S.ROLLING_OUT, "3", (Reason.ALIAS_MOVED, Reason.ROLLOUT_STARTED)),
    Row(rolling_back, S.ROLLING_BACK, "the last good version is back",
        World(spec(), at("2"), pods("1")), S.FAILED, "1", (Reason.ROLLOUT_SUCCEEDED,)),
    Row(failed_two, S.FAILED, "the alias stays", World(spec(), at("2"), pods("1")),
        S.FAILED, "1", ()),
    Row(failed_two, S.FAILED, "the alias moves on", World(spec(), at("3"), pods("1")),
        S.ROLLING_OUT, "3", (Reason.ALIAS_MOVED, Reason.ROLLOUT_STARTED)),
    Row(canary_paused, S.CANARY, "nothing happens",
        World(canary_spec(), at("2"), pods("1", 3), canary_pods("2", 1)),
        S.CANARY, "1", ()),
    Row(canary_paused, S.CANARY, "a promotion of another version", at_pause(promote="9"),
        S.CANARY, "1", ()),
    Row(canary_paused, S.CANARY, "its promotion", at_pause(promote="2"),
        S.PROMOTING, "2", (Reason.CANARY_PROMOTED,)),
    Row(canary_paused, S.CANARY, "its full promotion", at_pause(promote_full="2"),
        S.PROMOTING, "2", (Reason.CANARY_PROMOTED,)),
    Row(canary_paused, S.CANARY, "an abort of another version", at_pause(abort="9"),
        S.CANARY, "1", ()),
    Row(canary_paused, S.CANARY, "its abort", at_pause(abort="2"),
        S.ABORTED, "1", (Reason.ROLLOUT_ABORTED,)),
    Row(canary_aborted, S.ABORTED, "the abort stays", at_pause(abort="2"),
        S.ABORTED, "1", ()),
    Row(canary_aborted, S.ABORTED, "a retry of its canary", at_pause(retry="2"),
        S.CANARY, "1", (Reason.ROLLOUT_STARTED, Reason.CANARY_STEP)),  # its pod is there
    Row(rolling_out_two, S.ROLLING_OUT, "its abort",
        World(spec(), at("2"), rolling("2"), asked=ABORT_2),
        S.ROLLING_BACK, "1", (Reason.ROLLOUT_ABORTED, Reason.ROLLOUT_STARTED)),
    Row(rolling_out_two, S.ROLLING_OUT, "an abort of another version",
        World(spec(), at("2"), rolling("2"), asked=Requests(abort="9")),
        S.ROLLING_OUT, "2", ()),
    Row(aborted_two, S.ABORTED, "the abort stays",
        World(spec(), at("2"), pods("1"), asked=ABORT_2), S.ABORTED, "1", ()),
    Row(aborted_two, S.ABORTED, "the abort is removed", World(spec(), at("2"), pods("1")),
        S.ABORTED, "1", ()),
    Row(aborted_two, S.ABORTED, "a retry of its rolling update",
        World(spec(), at("2"), pods("1"), asked=RETRY_2),
        S.ROLLING_OUT, "2", (Reason.ROLLOUT_STARTED,)),
    Row(aborted_two, S.ABORTED, "the alias moves on", World(spec(), at("3"), pods("1")),
        S.ROLLING_OUT, "3", (Reason.ALIAS_MOVED, Reason.ROLLOUT_STARTED)),
    Row(failed_two, S.FAILED, "a retry of it", World(spec(), at("2"), pods("1"), asked=RETRY_2),
        S.ROLLING_OUT, "2", (Reason.ROLLOUT_STARTED,)),
    Row(retried_and_failed_again, S.FAILED, "the retry stays",
        World(spec(), at("2"), pods("1"), asked=RETRY_2), S.FAILED, "1", ()),
    Row(canary_paused, S.CANARY, "the alias moves back",
        World(canary_spec(), at("1"), pods("1", 3), canary_pods("2", 1)),
        S.SERVING, "1", (Reason.ALIAS_MOVED, Reason.CANARY_ABORTED)),
    Row(canary_paused, S.CANARY, "the canary's deadline passes",
        World(canary_spec(), at("2"), pods("1", 3), replace(canary_pods("2", 1),
              deadline_exceeded=True, available_replicas=0)),
        S.FAILED, "1", (Reason.ROLLOUT_FAILED,)),
    Row(canary_paused, S.CANARY, "the registry is down",
        World(canary_spec(), OUTAGE, pods("1", 3), canary_pods("2", 1)),
        S.CANARY, None, (Reason.REGISTRY_UNAVAILABLE,)),
    Row(promoting, S.PROMOTING, "its abort",
        World(canary_spec(), at("2"), rolling("2"), canary_pods("2", 1), asked=ABORT_2),
        S.ABORTED, "1", (Reason.ROLLOUT_ABORTED,)),
    Row(promoting, S.PROMOTING, "the stable side rolls to it",
        World(canary_spec(), at("2"), rolling("2"), canary_pods("2", 1)),
        S.ROLLING_OUT, "2", ()),
    Row(promoting, S.PROMOTING, "the stable side has rolled to it",
        World(canary_spec(), at("2"), pods("2"), canary_pods("2", 1)),
        S.SERVING, "2", (Reason.ROLLOUT_SUCCEEDED,)),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.start_state}: {r.event}" for r in ROWS])
def test_state_x_event_gives_the_next_state_and_plan(row: Row) -> None:
    status = row.start()
    before = row.world.spec.model_copy(update={"paused": False})  # the event may pause it
    assert state_of(before, status) is row.start_state

    decision = decided(status, row.world)

    assert state_of(row.world.spec, decision.status) is row.next_state
    assert (decision.pin.version if decision.pin is not None else None) == row.pin
    assert tuple(e.reason for e in decision.events) == row.reasons


def test_every_state_is_reached_by_a_row() -> None:
    assert {row.next_state for row in ROWS} | {row.start_state for row in ROWS} == set(S)


def test_an_aborted_rollout_says_so_and_leaves_the_alias_alone() -> None:
    revert = spec(rollout={"onFailure": "RevertAlias"})
    aborting = decided(rolling_out_two(), World(revert, at("2"), rolling("2"), asked=ABORT_2))
    assert aborting.revert_alias_to is None  # an abort is not a failure: the alias stays
    status = decided(aborting.status, World(revert, at("2"), pods("1"), asked=ABORT_2)).status

    assert status.phase is Phase.ABORTED
    assert "aliasop.io/abort=2" in status.message and "aliasop.io/retry=2" in status.message
    ready = status.condition(ConditionType.READY)
    assert ready is not None and (ready.is_true, ready.reason) == (True, "RolloutAborted")
    degraded = status.condition(ConditionType.DEGRADED)
    assert degraded is not None and not degraded.is_true
    assert [(h.version, h.reason, h.outcome) for h in status.history[:2]] == [
        ("1", Reason.ROLLBACK, Outcome.SUCCEEDED),
        ("2", Reason.ALIAS_MOVED, Outcome.ABORTED),
    ]
    assert status.failed_version == "2" and status.alias_version == "2"


def test_a_retried_version_is_recorded_as_such_and_retried_once() -> None:
    retried = decided(failed_two(), World(spec(), at("2"), pods("1"), asked=RETRY_2)).status
    assert (retried.history[0].version, retried.history[0].reason) == ("2", Reason.RETRIED)
    assert retried.failed_version is None
    again = retried_and_failed_again()
    assert again.failed_version == "2"
    assert [(h.version, h.reason, h.outcome) for h in again.history[:2]] == [
        ("1", Reason.ROLLBACK, Outcome.SUCCEEDED),
        ("2", Reason.RETRIED, Outcome.FAILED),
    ]


def test_the_registry_is_told_a_version_was_aborted() -> None:
    before = rolling_out_two()
    aborting = decided(before, World(spec(), at("2"), rolling("2"), asked=ABORT_2)).status
    [told] = [w for w in registry_records(before, aborting, "ml/bikes") if w.version == "2"]
    assert told.value is not None and told.value.startswith("aborted: the rollout of version 2")
