"""Capacity is a property of the plan: no plan takes available pods below spec.replicas, in
any state (a canary's steps, its promotion or abort, a plain rolling update, a challenger
added or removed), whatever the timing of the pods.

A pass is decided (aliasop.rollout.decide with aliasop.challenger.plan) and rendered
(aliasop.plan.plan_children) from the Deployments as `Cluster` shows them; each plan is
checked against them before `Cluster` plays it out. `Cluster` is a Deployment controller with
maxUnavailable 0 whose new pods turn available after a random number of passes (a seed per
test run): the old pods serve until then, pods scaled away go at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aliasop import challenger
from aliasop.builders import VARIANT_LABEL, VERSION_LABEL, ServingDefaults
from aliasop.deployments import ObservedDeployment
from aliasop.domain import CANARY, CHALLENGER, NOTHING_ASKED, Owner, Requests
from aliasop.models import ModelDeploymentSpec, ModelDeploymentStatus, ResolvedVersion
from aliasop.plan import ChildrenPlan, SeenChildren, plan_children
from aliasop.rollout import RolloutState, decide, state_of

from capacity import check

pytestmark = pytest.mark.timeout(20)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = Owner(name="bikes", namespace="ml", uid="uid-1")
DEFAULTS = ServingDefaults(image="serving:1", tracking_uri="http://mlflow:5000")
REPLICAS = 4
SEEDS = range(12)
PASSES = 60


@dataclass
class Deployment:
    """One Deployment as the controller runs it: its template, and how many pods of it are
    there and available; `waiting`: passes until the pods of its template are available."""

    version: str
    variant: str
    desired: int
    available: int
    waiting: int = 0

    def observed(self) -> ObservedDeployment:
        rolled = self.waiting == 0
        return ObservedDeployment(
            version=self.version,
            run_id=f"run{self.version}",
            revision="1",
            replicas_applied=True,
            generation=1,
            observed_generation=1,
            desired_replicas=self.desired,
            replicas=self.desired if rolled else self.desired + 1,
            updated_replicas=self.desired if rolled else 0,
            available_replicas=self.available,
            deadline_exceeded=False,
            variant=self.variant,
        )


@dataclass
class Cluster:
    rng: random.Random
    deployments: dict[str, Deployment] = field(default_factory=dict)  # by name

    def seen(self) -> SeenChildren:
        main = self.deployments.get("bikes")
        sides = {v: self.deployments.get(f"bikes-{v}") for v in (CANARY, CHALLENGER)}
        return SeenChildren(
            main=main.observed() if main is not None else None,
            sides={v: d.observed() for v, d in sides.items() if d is not None},
        )

    def play(self, plan: ChildrenPlan) -> None:
        """Apply `plan` as a Deployment controller with maxUnavailable 0 would."""
        for step in plan.apply:
            manifest = step.manifest
            if manifest["kind"] != "Deployment" or "template" not in manifest["spec"]:
                continue
            name = manifest["metadata"]["name"]
            labels = manifest["spec"]["template"]["metadata"]["labels"]
            version, variant = labels[VERSION_LABEL], labels.get(VARIANT_LABEL, "")
            desired = manifest["spec"]["replicas"]
            now = self.deployments.get(name)
            if now is None:
                now = self.deployments[name] = Deployment(version, variant, 0, 0)
            if (now.version, now.variant) != (version, variant) or desired > now.desired:
                now.waiting = self.rng.randint(1, 4)  # new pods, available later
            now.version, now.variant, now.desired = version, variant, desired
            now.available = min(now.available, desired)  # scaled away: gone at once
        for manifest in plan.delete:
            self.deployments.pop(manifest["metadata"]["name"], None)

    def tick(self) -> None:
        for deployment in self.deployments.values():
            if deployment.waiting:
                deployment.waiting -= 1
                if deployment.waiting == 0:
                    deployment.available = deployment.desired

    def available(self) -> int:
        return sum(d.available for d in self.deployments.values())


@dataclass
class Run:
    """Passes of one resource: the spec, the aliases, the status, the cluster."""

    spec: dict[str, Any]
    rng: random.Random
    alias: str = "1"
    challenger_alias: str = "7"
    asked: Requests = NOTHING_ASKED  # what a person asks (annotations)
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    now: datetime = T0

    def __post_init__(self) -> None:
        self.cluster = Cluster(self.rng)

    def spec_model(self) -> ModelDeploymentSpec:
        return ModelDeploymentSpec.model_validate(
            {"model": "models:/bikes@champion", "replicas": REPLICAS, **self.spec}
        )

    def step(self) -> None:
        spec = self.spec_model()
        seen = self.cluster.seen()
        challenger_side = challenger.plan(
            spec,
            self.status.challenger,
            ResolvedVersion(self.challenger_alias, f"run{self.challenger_alias}")
            if spec.challenger is not None
            else None,
            seen.main,
            seen.sides.get(CHALLENGER),
        )
        decision = decide(
            spec,
            1,
            self.status,
            ResolvedVersion(self.alias, f"run{self.alias}"),
            seen.main,
            self.now,
            canary_deployment=seen.sides.get(CANARY),
            asked=self.asked,
            challenger=challenger_side,
        )
        plan = plan_children(OWNER, spec, decision, seen, DEFAULTS)
        check(seen, plan, REPLICAS)
        self.status = decision.status
        self.cluster.play(plan)
        self.cluster.tick()
        self.now += timedelta(seconds=5)

    def until(self, done: Any) -> None:
        for _ in range(PASSES):
            self.step()
            if done():
                return
        raise AssertionError(f"not done after {PASSES} passes: {self.status.message}")

    def serving(self, version: str) -> None:
        self.alias = version
        self.until(lambda: self.status.serving_version == version and self.settled())

    def settled(self) -> bool:
        pods = self.cluster.deployments.values()
        return all(d.waiting == 0 for d in pods) and self.cluster.available() >= REPLICAS


CANARY_STEPS = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"setWeight": 75}]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_canary_through_its_steps_and_promotion(seed: int) -> None:
    run = Run({"rollout": {"strategy": "Canary", "steps": CANARY_STEPS}}, random.Random(seed))
    run.serving("1")
    run.alias = "2"
    run.until(lambda: run.status.canary is not None and run.status.canary.step == 2)
    run.asked = Requests(promote="2")
    run.until(
        lambda: (
            run.status.serving_version == "2"
            and run.status.canary is None
            and run.cluster.deployments["bikes-canary"].desired == 0
            and run.settled()
        )
    )
    assert run.cluster.deployments["bikes"].version == "2"
    assert run.cluster.deployments["bikes"].desired == REPLICAS


@pytest.mark.parametrize("seed", SEEDS)
def test_a_canary_stopped_by_the_alias_moving_back(seed: int) -> None:
    run = Run({"rollout": {"strategy": "Canary", "steps": CANARY_STEPS}}, random.Random(seed))
    run.serving("1")
    run.alias, run.asked = "2", Requests(promote="2")  # past its pause at once
    run.until(lambda: run.status.canary is not None and run.status.canary.step >= 3)
    run.alias = "1"
    run.until(
        lambda: (
            run.status.canary is None
            and run.cluster.deployments["bikes-canary"].desired == 0
            and run.settled()
        )
    )
    assert run.cluster.deployments["bikes"].version == "1"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_plain_rolling_update(seed: int) -> None:
    run = Run({}, random.Random(seed))
    run.serving("1")
    run.serving("2")


@pytest.mark.parametrize("seed", SEEDS)
def test_a_challenger_added_to_a_serving_resource_and_removed(seed: int) -> None:
    run = Run({}, random.Random(seed))
    run.serving("1")
    run.spec = {"challenger": {"alias": "challenger", "weight": 25}}
    run.until(
        lambda: (
            run.status.challenger is not None
            and run.status.challenger.serving_version == "7"
            and run.cluster.deployments["bikes"].desired == REPLICAS - 1
            and run.settled()
        )
    )
    run.challenger_alias = "8"
    run.until(
        lambda: (
            run.status.challenger is not None
            and run.status.challenger.serving_version == "8"
            and run.settled()
        )
    )
    run.spec = {}
    run.until(lambda: "bikes-challenger" not in run.cluster.deployments and run.settled())
    assert run.cluster.deployments["bikes"].desired == REPLICAS


@pytest.mark.parametrize("seed", SEEDS)
def test_a_canary_aborted_at_a_step_and_while_it_is_promoted(seed: int) -> None:
    run = Run({"rollout": {"strategy": "Canary", "steps": CANARY_STEPS}}, random.Random(seed))
    run.serving("1")
    run.alias, run.asked = "2", Requests(promote="2")
    run.until(lambda: run.status.canary is not None and run.status.canary.step >= 3)
    run.asked = Requests(abort="2")
    run.until(lambda: state_of(run.spec_model(), run.status) is RolloutState.ABORTED)
    run.until(lambda: run.cluster.deployments["bikes-canary"].desired == 0 and run.settled())
    assert run.cluster.deployments["bikes"].version == "1"

    run.asked = Requests(retry="2", promote_full="2")  # again, and straight to promotion
    run.until(lambda: run.status.canary is not None and run.status.canary.phase == "Promoting")
    run.asked = Requests(abort="2")
    run.until(lambda: state_of(run.spec_model(), run.status) is RolloutState.ABORTED)
    run.until(lambda: run.cluster.deployments["bikes-canary"].desired == 0 and run.settled())
    assert run.cluster.deployments["bikes"].version == "1"
    assert run.status.alias_version == "2"  # the alias left alone
