"""aliasop.plan: a decision -> the children to apply, in order, and those to delete."""

from __future__ import annotations

from dataclasses import replace

import pytest

from aliasop.builders import HANDOVER_FIELD_MANAGER, ServingDefaults
from aliasop.domain import Owner, PinnedVersion, Side
from aliasop.models import ModelDeploymentSpec, ModelDeploymentStatus
from aliasop.plan import ChildrenPlan, SeenChildren, plan_children, plan_pass
from aliasop.rollout import Decision, TagWrite

from observed import observed

pytestmark = pytest.mark.timeout(10)

OWNER = Owner(name="bikes", namespace="ml", uid="uid-1")
DEFAULTS = ServingDefaults(image="serving:1", tracking_uri="http://mlflow:5000")
ONE = PinnedVersion("1", "run1")


def spec(**fields: object) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"model": "models:/bikes@champion", "replicas": 4, **fields}
    )


def names(plan: ChildrenPlan) -> tuple[list[str], list[str]]:
    applied = [f"{a.manifest['kind']}/{a.manifest['metadata']['name']}" for a in plan.apply]
    deleted = [f"{m['kind']}/{m['metadata']['name']}" for m in plan.delete]
    return applied, deleted


def test_the_main_side_its_service_and_nothing_else_without_other_sides() -> None:
    plan = plan_children(
        OWNER, spec(), Decision(ModelDeploymentStatus(), ONE), SeenChildren(), DEFAULTS
    )
    assert names(plan) == (["Deployment/bikes", "Service/bikes"], [])
    assert [a.current_revision for a in plan.apply] == [None, None]


def test_each_child_is_applied_over_its_own_revision_as_watched() -> None:
    seen = SeenChildren(
        main=observed("1", 3),
        sides={"canary": observed("2", 1)},
        services={"": "s0", "stable": "s1", "canary": "s2"},
    )
    canary = spec(rollout={"strategy": "Canary", "steps": [{"setWeight": 25}]})
    decision = Decision(
        ModelDeploymentStatus(), ONE, stable_replicas=3, canary=Side(PinnedVersion("2", "run2"), 1)
    )
    plan = plan_children(OWNER, canary, decision, seen, DEFAULTS)
    assert names(plan)[0] == [
        "Deployment/bikes",
        "Service/bikes",
        "Service/bikes-stable",
        "Service/bikes-canary",
        "Deployment/bikes-canary",
    ]
    assert [a.current_revision for a in plan.apply] == ["1", "s0", "s1", "s2", "1"]
    assert [a.what for a in plan.apply][-1] == "canary's Deployment"
    assert plan.apply[0].manifest["spec"]["replicas"] == 3
    assert plan.apply[-1].manifest["spec"]["replicas"] == 1


def test_a_challenger_no_longer_in_the_spec_goes_once_drained_with_its_services() -> None:
    seen = SeenChildren(
        main=observed("1", 4),
        sides={"challenger": observed("7", 1)},
        services={"": "s0", "stable": "s1", "challenger": "s2"},
    )
    draining = Decision(
        ModelDeploymentStatus(), ONE, challenger=Side(PinnedVersion("7", "run7"), 1)
    )
    applied, deleted = names(plan_children(OWNER, spec(), draining, seen, DEFAULTS))
    assert applied[-1] == "Deployment/bikes-challenger"  # still serving while main fills up
    assert deleted == ["Service/bikes-challenger", "Service/bikes-stable"]

    drained = replace(seen, sides={"challenger": observed("7", 0)})
    applied, deleted = names(
        plan_children(OWNER, spec(), Decision(ModelDeploymentStatus(), ONE), drained, DEFAULTS)
    )
    assert "Deployment/bikes-challenger" not in applied
    assert deleted == [
        "Deployment/bikes-challenger",
        "Service/bikes-challenger",
        "Service/bikes-stable",
    ]


def test_a_side_in_use_is_never_deleted_even_at_zero_pods() -> None:
    seen = SeenChildren(main=observed("1", 4), sides={"canary": observed("2", 0)})
    canary = spec(rollout={"strategy": "Canary", "steps": [{"setWeight": 25}]})
    _, deleted = names(
        plan_children(OWNER, canary, Decision(ModelDeploymentStatus(), ONE), seen, DEFAULTS)
    )
    assert deleted == []


def test_the_disruption_budget_follows_the_spec_and_replicas_are_handed_over() -> None:
    budget = spec(serving={"disruptionBudget": {"maxUnavailable": 1}})
    decision = Decision(ModelDeploymentStatus(), ONE)
    applied, _ = names(plan_children(OWNER, budget, decision, SeenChildren(), DEFAULTS))
    assert applied[-1] == "PodDisruptionBudget/bikes"
    _, deleted = names(plan_children(OWNER, spec(), decision, SeenChildren(budget="b1"), DEFAULTS))
    assert deleted == ["PodDisruptionBudget/bikes"]

    unset = ModelDeploymentSpec.model_validate({"model": "models:/bikes@champion"})
    plan = plan_children(OWNER, unset, decision, SeenChildren(main=observed("1", 5)), DEFAULTS)
    handover = plan.apply[0]
    assert handover.field_manager == HANDOVER_FIELD_MANAGER
    assert handover.manifest["spec"] == {"replicas": 5}


def test_nothing_of_the_main_side_without_a_version_to_run() -> None:
    seen = SeenChildren(services={"": "s0"}, budget="b1")
    plan = plan_children(OWNER, spec(), Decision(ModelDeploymentStatus(), None), seen, DEFAULTS)
    assert plan == ChildrenPlan()


def test_a_pass_plans_what_the_registry_is_told_from_the_stored_status() -> None:
    stored = ModelDeploymentStatus(serving_version="1")
    moved = ModelDeploymentStatus(serving_version="2")
    plan = plan_pass(OWNER, spec(), stored, Decision(moved, ONE), SeenChildren(), DEFAULTS)
    assert plan.registry_writes == (
        TagWrite("1", "aliasop/ml/bikes", None),
        TagWrite("2", "aliasop/ml/bikes", "serving"),
    )
    assert plan.children == plan_children(
        OWNER, spec(), Decision(moved, ONE), SeenChildren(), DEFAULTS
    )
