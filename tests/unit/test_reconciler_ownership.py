"""A pass and the objects it does not own (issue 26): a name another object holds, main
children included, stops the pass before it writes anything, and is reported."""

from __future__ import annotations

import pytest
from test_reconciler import KEY, World

from aliasop.interfaces import ApiError
from aliasop.models import ConditionType, Phase, Reason

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("kind", ["Deployment", "Service"])
async def test_a_main_child_made_by_hand_stops_the_pass_before_any_write(kind: str) -> None:
    world = World()
    world.seen()
    world.cluster.controllers[(kind, "bikes")] = ""  # no controller: made by hand

    for _ in range(2):
        await world.reconciler.run_pass(KEY)

    assert world.cluster.applied == [] and world.cluster.deleted == []
    status = world.status()
    assert status.phase is Phase.DEGRADED
    assert status.message.startswith(f"the {kind} bikes exists and belongs to no owner")
    assert "aliasop.io/adopt=bikes" in status.message
    for condition in (ConditionType.DEGRADED, ConditionType.STALLED):
        reported = status.condition(condition)
        assert reported is not None and reported.is_true
        assert reported.reason == Reason.NAME_CLASH.value
    assert world.cluster.events == [("Warning", "NameClash")]  # once, not at every pass


async def test_a_pass_goes_on_once_the_name_is_free() -> None:
    world = World()
    world.seen()
    world.cluster.controllers[("Service", "bikes")] = "uid-of-another"
    await world.reconciler.run_pass(KEY)
    assert "another owner (ModelDeployment uid-of-another)" in world.status().message

    del world.cluster.controllers[("Service", "bikes")]
    await world.reconciler.run_pass(KEY)
    assert [m["kind"] for m in world.cluster.applied] == ["Deployment", "Service"]
    assert world.status().phase is Phase.PROGRESSING


async def test_a_handed_over_service_is_applied_and_never_deleted_to_recreate_it() -> None:
    world = World()
    world.seen()
    world.cluster.controllers[("Service", "bikes")] = ""
    world.cluster.handed_over.add(("Service", "bikes"))
    # Its port, set by hand, cannot be merged with aliasop's: the refusal is reported, the
    # Service is not deleted and made anew as one of aliasop's own would be.
    world.cluster.refuse_once["Service"] = ApiError(422, 'spec.ports[1].name: Duplicate "http"')

    await world.reconciler.run_pass(KEY)

    assert world.cluster.deleted == []
    assert world.status().message == (
        'the API server refused the Service: spec.ports[1].name: Duplicate "http"'
    )
    await world.reconciler.run_pass(KEY)  # a port fixed by hand: taken over
    assert [m["kind"] for m in world.cluster.applied] == ["Deployment", "Deployment", "Service"]
