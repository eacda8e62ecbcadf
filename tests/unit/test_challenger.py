"""Champion-challenger decisions (aliasop.challenger), pure."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from aliasop.challenger import plan
from aliasop.models import (
    ChallengerStatus,
    ModelDeploymentSpec,
    Reason,
    RegistryProblem,
    ResolvedVersion,
)

from observed import observed

pytestmark = pytest.mark.timeout(10)


def spec(**challenger: Any) -> ModelDeploymentSpec:
    fields: dict[str, Any] = {"model": "models:/bikes@champion", "replicas": 4}
    if challenger:
        fields["challenger"] = challenger
    return ModelDeploymentSpec.model_validate(fields)


def at(version: str) -> ResolvedVersion:
    return ResolvedVersion(version, f"run{version}")


def test_without_a_challenger_there_is_no_side() -> None:
    decided = plan(spec(), None, None, observed("1", 4), None)
    assert decided.status is None and decided.side is None and decided.main_replicas is None


def test_the_challenger_comes_up_before_the_main_side_makes_room() -> None:
    md = spec(alias="challenger", weight=25)
    first = plan(md, None, at("7"), observed("1", 4), None)
    assert first.side is not None and (first.side.pin.version, first.side.replicas) == ("7", 1)
    assert first.main_replicas == 4  # until the challenger pod is available
    assert first.status is not None and first.status.alias_version == "7"
    assert first.status.serving_version is None

    ready = plan(md, first.status, at("7"), observed("1", 4), observed("7", 1))
    assert ready.main_replicas == 3
    assert ready.status is not None and ready.status.serving_version == "7"
    assert ready.status.message == "version 7 serves 25% of the pods"
    assert ready.events == []


def test_the_challenger_alias_moves_its_side_only() -> None:
    md = spec(alias="challenger", weight=50)
    before = ChallengerStatus(alias="challenger", alias_version="7", weight=50)
    moved = plan(md, before, at("8"), observed("1", 2), observed("7", 2))
    assert moved.side is not None and moved.side.pin.version == "8"
    assert moved.main_replicas == 2
    assert [e.reason for e in moved.events] == [Reason.CHALLENGER_MOVED]
    assert moved.status is not None and moved.status.message.startswith("rolling out version 8")


def test_a_registry_problem_leaves_the_challenger_as_it_is() -> None:
    md = spec(alias="challenger", weight=50)
    before = ChallengerStatus(alias="challenger", alias_version="7", weight=50)
    problem = RegistryProblem(Reason.ALIAS_NOT_FOUND, "model 'bikes' has no alias 'challenger'")
    held = plan(md, before, problem, observed("1", 2), observed("7", 2))
    assert held.side is not None and (held.side.pin.version, held.side.replicas) == ("7", 2)
    assert held.status is not None and held.status.alias_version == "7"
    assert "has no alias 'challenger'" in held.status.message
    nothing_yet = plan(md, None, problem, observed("1", 4), None)
    assert nothing_yet.side is None and nothing_yet.main_replicas is None


def test_a_challenger_removed_drains_once_the_main_side_is_whole() -> None:
    md = spec()
    growing = replace(observed("1", 4, available=2), replicas=4)
    kept = plan(md, None, None, growing, observed("7", 2))
    assert kept.side is not None and kept.side.replicas == 2
    drained = plan(md, None, None, observed("1", 4), observed("7", 2))
    assert drained.side is not None and drained.side.replicas == 0
    assert plan(md, None, None, observed("1", 4), observed("7", 0)).side is None


def test_a_challenger_needs_replicas_and_no_canary() -> None:
    with pytest.raises(ValueError, match="challenger needs replicas"):
        ModelDeploymentSpec.model_validate(
            {"model": "models:/m@a", "challenger": {"alias": "b", "weight": 10}}
        )
    with pytest.raises(ValueError, match="do not go together"):
        ModelDeploymentSpec.model_validate(
            {
                "model": "models:/m@a",
                "replicas": 2,
                "challenger": {"alias": "b", "weight": 10},
                "rollout": {"strategy": "Canary", "steps": [{"setWeight": 10}]},
            }
        )
