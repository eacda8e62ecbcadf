"""Registry write grants and the alias revert's compare-before-write (aliasop.grants), and
what a pass writes and reports with them (on the fakes of test_reconciler)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from test_reconciler import KEY, FakeWrites, World, stuck

from aliasop.grants import (
    RevertOutcome,
    RevertResult,
    may_write,
    revert_outcome,
    revert_recorded,
    scope_reported,
)
from aliasop.models import (
    ConditionType,
    HistoryEntry,
    ModelDeploymentStatus,
    ModelUri,
    Outcome,
    Reason,
    RegistryProblem,
    ResolvedVersion,
)

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GRANTS = {"fraud": ["fraud", "fraud-*"], "team-*": ["shared-[ab]"], "sandbox": ["*"]}


@pytest.mark.parametrize(
    ("namespace", "model", "granted"),
    [
        ("fraud", "fraud", True),
        ("fraud", "fraud-scoring", True),
        ("fraud", "frauds", False),  # a pattern is the whole name, not a prefix
        ("fraud", "bikes", False),
        ("fraud-dev", "fraud", False),  # the namespace is matched whole too
        ("team-a", "shared-a", True),
        ("team-a", "shared-c", False),
        ("team", "shared-a", False),
        ("sandbox", "anything", True),
        ("Fraud", "fraud", False),  # names are case-sensitive
        ("other", "fraud", False),
    ],
)
def test_a_grant_names_the_namespace_and_the_model(
    namespace: str, model: str, granted: bool
) -> None:
    assert may_write(GRANTS, namespace, model) is granted


def test_no_grants_grant_nothing() -> None:
    assert not may_write({}, "fraud", "fraud")
    assert not may_write({"fraud": []}, "fraud", "fraud")


@pytest.mark.parametrize(
    ("alias_now", "outcome"),
    [
        ("3", RevertOutcome.REVERTED),  # still at the failed version
        ("2", RevertOutcome.ALREADY_THERE),
        ("4", RevertOutcome.MOVED_MEANWHILE),  # a person moved it on: their move stands
        ("1", RevertOutcome.MOVED_MEANWHILE),  # ... or back further
        (None, RevertOutcome.GONE),  # deleted: not created again
    ],
)
def test_a_revert_writes_only_while_the_alias_points_at_the_failed_version(
    alias_now: str | None, outcome: RevertOutcome
) -> None:
    assert revert_outcome(alias_now, failed="3", back_to="2") is outcome


def test_without_a_failed_version_nothing_is_reverted() -> None:
    assert revert_outcome("3", failed=None, back_to="2") is RevertOutcome.MOVED_MEANWHILE


def failed_status() -> ModelDeploymentStatus:
    entry = HistoryEntry(
        version="3",
        reason=Reason.ALIAS_MOVED,
        started_at=T0,
        finished_at=T0,
        outcome=Outcome.FAILED,
        message="version 3 did not become available within 60s",
    )
    return ModelDeploymentStatus(
        failed_version="3", message="rolled back to version 2", history=[entry]
    )


def test_the_record_of_a_revert_says_what_became_of_the_alias() -> None:
    uri = ModelUri("fraud", "champion")
    status, event = revert_recorded(failed_status(), uri, "2", RevertResult(RevertOutcome.REVERTED))
    assert status == failed_status()
    assert (event.reason, event.message) == (
        Reason.ALIAS_REVERTED,
        "models:/fraud@champion moved back from version 3 to version 2",
    )

    moved = RevertResult(RevertOutcome.MOVED_MEANWHILE, alias_now="4")
    status, event = revert_recorded(failed_status(), uri, "2", moved)
    why = (
        "models:/fraud@champion not moved back: it points at version 4 now, not at the failed "
        "version 3: someone moved it since, and their move stands"
    )
    assert event.reason is Reason.ALIAS_NOT_REVERTED and event.message == why
    assert status.message == f"rolled back to version 2; {why}"
    assert status.history[0].message.endswith(f"within 60s; {why}")
    # Recorded again (the same outcome in a later pass): not repeated.
    again, _ = revert_recorded(status, uri, "2", moved)
    assert again == status

    _, event = revert_recorded(failed_status(), uri, "2", RevertResult(RevertOutcome.NOT_GRANTED))
    assert "has no grant to write to the model (ALIASOP_REGISTRY_WRITE_GRANTS)" in event.message
    failed = RevertResult(RevertOutcome.REGISTRY_FAILED, problem="MLflow answered HTTP 503")
    _, event = revert_recorded(failed_status(), uri, "2", failed)
    assert event.message.endswith("not moved back: the registry failed: MLflow answered HTTP 503")


def test_the_grant_condition_is_set_and_its_turns_announced_once() -> None:
    before = ModelDeploymentStatus(observed_generation=4)
    status, events = scope_reported(before, before, False, "tenant", "fraud", T0)
    condition = status.condition(ConditionType.REGISTRY_WRITES_GRANTED)
    assert condition is not None and condition.status == "False"
    assert condition.reason == Reason.WRITES_NOT_GRANTED and condition.observed_generation == 4
    assert "namespace tenant has no grant to write to registered model 'fraud'" in (
        condition.message
    )
    assert [(e.type, e.reason) for e in events] == [("Warning", Reason.WRITES_NOT_GRANTED)]

    later = T0 + timedelta(minutes=5)
    again, events = scope_reported(status, status, False, "tenant", "fraud", later)
    assert events == [] and again == status  # no turn: no Event, the same transition time

    granted, events = scope_reported(status, status, True, "tenant", "fraud", later)
    condition = granted.condition(ConditionType.REGISTRY_WRITES_GRANTED)
    assert condition is not None and condition.is_true and condition.last_transition_time == later
    assert [(e.type, e.reason) for e in events] == [("Normal", Reason.WRITES_GRANTED)]


# --- a pass, on the fakes -------------------------------------------------------------------


async def fail_version_2(world: World) -> None:
    """Version 1 serves, the alias moves to 2, whose rollout misses its deadline."""
    world.seen(rollout={"onFailure": "RevertAlias"})
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    await world.reconciler.run_pass(KEY)
    world.resolver.answer = ResolvedVersion("2", "run2")
    assert world.writes is not None
    world.writes.pointing["champion"] = "2"
    await world.reconciler.run_pass(KEY)
    stuck(world, "2")
    await world.reconciler.run_pass(KEY)


async def test_without_a_grant_a_namespace_writes_nothing_and_its_status_says_so() -> None:
    world = World(writes=FakeWrites(), write_grants={"ml": ["other-*"], "team": ["bikes"]})
    assert world.writes is not None
    await fail_version_2(world)

    assert world.writes.tags == {} and world.writes.aliases == []  # no tag, no revert
    assert world.writes.pointing == {"champion": "2"}
    assert world.cluster.versions_applied()[-1] == "1"  # rolled back all the same
    condition = world.status().condition(ConditionType.REGISTRY_WRITES_GRANTED)
    assert condition is not None and condition.status == "False"
    assert world.reasons().count("WritesNotGranted") == 1  # once, not every pass
    assert world.reasons()[-1] == "AliasNotReverted"
    assert "not moved back: this namespace has no grant" in world.status().message


async def test_with_a_grant_the_revert_happens_while_the_alias_is_at_the_failed_version() -> None:
    world = World(writes=FakeWrites(), write_grants={"ml": ["bikes"]})
    assert world.writes is not None
    await fail_version_2(world)
    assert world.writes.aliases == [("champion", "1")]
    assert world.reasons()[-1] == "AliasReverted"
    condition = world.status().condition(ConditionType.REGISTRY_WRITES_GRANTED)
    assert condition is not None and condition.is_true


async def test_a_move_made_meanwhile_is_not_overwritten() -> None:
    world = World(writes=FakeWrites(), write_grants={"ml": ["bikes"]})
    assert world.writes is not None
    world.seen(rollout={"onFailure": "RevertAlias"})
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    await world.reconciler.run_pass(KEY)
    world.resolver.answer = ResolvedVersion("2", "run2")
    await world.reconciler.run_pass(KEY)
    stuck(world, "2")
    world.writes.pointing["champion"] = "3"  # a person moved it on before the failure
    await world.reconciler.run_pass(KEY)

    assert world.writes.aliases == []
    assert world.writes.pointing == {"champion": "3"}
    assert world.reasons()[-1] == "AliasNotReverted"
    (failed,) = [entry for entry in world.status().history if entry.version == "2"]
    assert "not moved back: it points at version 3 now" in failed.message
    assert "not moved back: it points at version 3 now" in world.status().message


async def test_a_registry_failing_the_revert_is_recorded() -> None:
    world = World(writes=FakeWrites(), write_grants={"ml": ["bikes"]})
    assert world.writes is not None
    world.seen(rollout={"onFailure": "RevertAlias"})
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    await world.reconciler.run_pass(KEY)
    world.resolver.answer = ResolvedVersion("2", "run2")
    await world.reconciler.run_pass(KEY)
    stuck(world, "2")
    world.writes.problem = RegistryProblem(Reason.REGISTRY_UNAVAILABLE, "MLflow answered 503")
    await world.reconciler.run_pass(KEY)
    assert world.writes.aliases == []
    assert world.reasons()[-1] == "AliasNotReverted"
    assert "the registry failed: MLflow answered 503" in world.status().message
    assert world.cluster.versions_applied()[-1] == "1"


async def test_without_write_back_there_is_no_grant_condition() -> None:
    world = World(write_grants={})
    world.seen()
    await world.reconciler.run_pass(KEY)
    assert world.status().condition(ConditionType.REGISTRY_WRITES_GRANTED) is None
    assert "WritesNotGranted" not in world.reasons()


async def test_a_resource_gone_without_a_grant_removes_no_tag() -> None:
    world = World(writes=FakeWrites(), write_grants={})
    assert world.writes is not None
    world.writes.tags[("1", "aliasop/ml/bikes")] = "serving"  # written by whoever could
    world.seen()
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    await world.reconciler.run_pass(KEY)
    world.seen(deleted=True)
    assert world.reconciler._background == set()  # nothing sent, not even in the background
    assert world.writes.tags == {("1", "aliasop/ml/bikes"): "serving"}
