"""Shards: the selector's keys, the labels children carry, each shard's own Lease."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aliasop.builders import get_service
from aliasop.domain import Owner
from aliasop.models import ModelDeploymentSpec
from aliasop.settings import Settings
from aliasop.sharding import lease_name, selector_keys, shard_labels


@pytest.mark.parametrize(
    ("selector", "keys"),
    [
        ("", set()),
        ("aliasop.io/shard=a", {"aliasop.io/shard"}),
        ("!aliasop.io/shard", {"aliasop.io/shard"}),
        (
            "team in (a, b),tier notin (gpu),env!=dev,zone==x,canary",
            {"team", "tier", "env", "zone", "canary"},
        ),
    ],
)
def test_the_keys_a_selector_names(selector: str, keys: set[str]) -> None:
    assert selector_keys(selector) == keys


@pytest.mark.parametrize("selector", ["a=b=c", "=x", "team in a", "a,,b", "-bad=1"])
def test_a_setting_that_is_no_label_selector_is_refused_at_start(selector: str) -> None:
    with pytest.raises(ValidationError, match="not a label selector requirement"):
        Settings(watch_label_selector=selector)


def test_children_carry_the_labels_the_selector_names_and_aliasop_s_own_win() -> None:
    labels = shard_labels(
        {"aliasop.io/shard": "a", "team": "x", "app.kubernetes.io/managed-by": "argocd"},
        selector_keys("aliasop.io/shard=a,app.kubernetes.io/managed-by"),
    )
    owner = Owner(name="bikes", namespace="ml", uid="u1", labels=labels)
    spec = ModelDeploymentSpec.model_validate({"model": "models:/bikes@champion"})

    service = get_service(owner, spec)

    assert service["metadata"]["labels"]["aliasop.io/shard"] == "a"
    assert "team" not in service["metadata"]["labels"]
    assert service["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aliasop"


def test_each_shard_has_a_lease_of_its_own() -> None:
    assert lease_name("") == "aliasop"
    assert lease_name("aliasop.io/shard=a") != lease_name("aliasop.io/shard=b")
    assert lease_name("aliasop.io/shard=a").startswith("aliasop-")


def test_lease_timings_must_let_a_leader_stop_before_a_standby_takes_over() -> None:
    with pytest.raises(ValidationError, match="lease duration > renew deadline > retry period"):
        Settings(leader_elect_lease_duration_seconds=10, leader_elect_renew_deadline_seconds=10)
