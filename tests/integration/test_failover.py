"""A rollout's state survives a failover: two operator replicas on a Lease, a ModelDeployment
created after both started (so the standby first saw it with an empty status), the leader
killed mid-way. The new leader goes on from what the API server holds (the step, the stable
version, the canary's pods, the history, the versions rolled back and the last good one),
not from what its watch showed it when the resource was created.

Each test runs two operators of its own on a shard of its own (see test_high_availability).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from test_high_availability import LEASE_SECONDS, Replicas

from aliasop_dev import bikes

from resources import NeverReady, Versions, View
from support import SHARD_LABEL, wait_for

pytestmark = pytest.mark.timeout(300)

REPLICAS = 4
DEADLINE_SECONDS = 30  # the smallest progressDeadlineSeconds the CRD accepts
# "0": every pass writes its status (lastResolvedTime moves each poll), so the tests see each
# pass of the new leader instead of waiting a fixed time for one.
EVERY_PASS = "0"


@pytest.fixture
def shard(
    k8s: client.ApiClient, operator_kubeconfig: str, mlflow_uri: str, tmp_path: Path
) -> Iterator[Replicas]:
    """Replicas `a` and `b`, both started before any resource of their shard exists."""
    replicas = Replicas(k8s, operator_kubeconfig, mlflow_uri, tmp_path)
    try:
        for identity in ("a", "b"):
            replicas.start(identity, ALIASOP_STATUS_REFRESH_SECONDS=EVERY_PASS)
        yield replicas
    finally:
        replicas.stop()


@pytest.fixture
def create(
    k8s: client.ApiClient, restricted: str, model_name: str, shard: Replicas
) -> Callable[..., View]:
    """Create `bikes` in the shard, following the model's @champion, and wait until version
    1 serves."""
    api = client.CustomObjectsApi(k8s)

    def created(version: str, **spec: Any) -> View:
        body = {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {
                "name": "bikes",
                "namespace": restricted,
                "labels": {SHARD_LABEL: shard.shard},
            },
            "spec": {
                "model": f"models:/{model_name}@champion",
                "replicas": 2,
                "pollIntervalSeconds": 5,
                **spec,
            },
        }
        api.create_namespaced_custom_object(
            "aliasop.io", "v1alpha1", restricted, "modeldeployments", body
        )
        view = View(k8s, restricted, "bikes")
        view.wait_serving(version)
        return view

    return created


def fail_over(shard: Replicas, view: View) -> None:
    """Kill the leader; return once the new one has passed twice (two status writes)."""
    leader = shard.wait_leader()
    shard.processes[leader].kill()
    shard.wait_leader(other_than=leader, timeout=LEASE_SECONDS + 10)
    written: list[str] = [view.mdep()["metadata"]["resourceVersion"]]

    def passed_twice() -> bool:
        version = view.mdep()["metadata"]["resourceVersion"]
        if version != written[-1]:
            written.append(version)
        return len(written) > 2

    wait_for(passed_twice, 60, message="two passes of the new leader")


def history(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(h["version"], h["reason"], h["outcome"]) for h in status.get("history", [])]


def replicas_of(view: View, name: str) -> tuple[int | None, str | None]:
    """spec.replicas and the version of the Deployment `name`; (None, None) when none."""
    deployment = View(view.apps.api_client, view.namespace, name)
    found = deployment.deployment()
    if found is None:
        return None, None
    return found.spec.replicas, deployment.template_version()


def test_a_canary_at_its_manual_pause_survives_a_failover_and_is_promoted_after(
    shard: Replicas,
    create: Callable[..., View],
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
) -> None:
    v1, v2 = two_versions
    rollout = {"strategy": "Canary", "steps": [{"setWeight": 25}, {"pause": {}}]}
    view = create(v1.version, replicas=REPLICAS, rollout=rollout)
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)

    def paused() -> dict[str, Any] | None:
        status = view.status()
        canary = status.get("canary") or {}
        return status if (canary.get("step"), canary.get("phase")) == (2, "Paused") else None

    before = wait_for(paused, 90, message="the canary at its pause")
    wait_for(
        lambda: (
            replicas_of(view, "bikes") == (3, v1.version)
            and replicas_of(view, "bikes-canary") == (1, v2.version)
        ),
        60,
        message="3 stable pods and 1 canary pod",
    )

    fail_over(shard, view)

    after = view.status()
    assert after["canary"]["version"] == v2.version
    assert (after["canary"]["step"], after["canary"]["phase"]) == (2, "Paused")
    assert after["canary"]["stepStartedAt"] == before["canary"]["stepStartedAt"]
    assert after["servingVersion"] == v1.version
    assert after["history"] == before["history"]
    assert replicas_of(view, "bikes") == (3, v1.version)
    assert replicas_of(view, "bikes-canary") == (1, v2.version)

    # The manual promotion the pause waits for completes the rollout under the new leader.
    api = client.CustomObjectsApi(view.apps.api_client)
    promote = {"metadata": {"annotations": {"aliasop.io/promote": v2.version}}}
    api.patch_namespaced_custom_object(
        "aliasop.io", "v1alpha1", view.namespace, "modeldeployments", "bikes", promote
    )
    status = view.wait_serving(v2.version, timeout=120)
    assert status.get("canary") is None
    assert history(status)[0] == (v2.version, "AliasMoved", "Succeeded")
    assert [h[0] for h in history(status)].count(v2.version) == 1
    assert replicas_of(view, "bikes") == (REPLICAS, v2.version)


def test_a_version_rolled_back_before_a_failover_is_not_rolled_out_again(
    shard: Replicas,
    create: Callable[..., View],
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    never_ready: NeverReady,
) -> None:
    v1, v2 = two_versions
    view = create(v1.version, rollout={"progressDeadlineSeconds": DEADLINE_SECONDS})
    never_ready.start(v2.version)
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)

    def rolled_back() -> dict[str, Any] | None:
        status = view.status()
        done = history(status)[:1] == [(v1.version, "Rollback", "Succeeded")]
        return status if done else None

    before = wait_for(rolled_back, DEADLINE_SECONDS + 60, message="the rollback to v1")
    assert before["failedVersion"] == v2.version

    fail_over(shard, view)

    after = view.status()
    assert after["aliasVersion"] == v2.version  # the alias still points at it
    assert after["failedVersion"] == v2.version
    assert after["servingVersion"] == after["lastGoodVersion"] == v1.version
    assert history(after) == history(before)
    assert view.template_version() == v1.version


def test_a_rollout_that_fails_after_a_failover_is_rolled_back_to_the_last_good_version(
    shard: Replicas,
    create: Callable[..., View],
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    never_ready: NeverReady,
) -> None:
    v1, v2 = two_versions
    view = create(v1.version, rollout={"progressDeadlineSeconds": DEADLINE_SECONDS})
    never_ready.start(v2.version)
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    wait_for(
        lambda: history(view.status())[:1] == [(v2.version, "AliasMoved", "Progressing")],
        60,
        message="the rollout to v2 under way",
    )

    fail_over(shard, view)  # before its deadline: it fails under the new leader

    def rolled_back() -> dict[str, Any] | None:
        status = view.status()
        done = history(status)[:1] == [(v1.version, "Rollback", "Succeeded")]
        return status if done else None

    status = wait_for(rolled_back, DEADLINE_SECONDS + 60, message="the rollback to v1")
    assert history(status) == [
        (v1.version, "Rollback", "Succeeded"),
        (v2.version, "AliasMoved", "Failed"),
        (v1.version, "Created", "Succeeded"),
    ]
    assert status["failedVersion"] == v2.version
    assert status["servingVersion"] == status["lastGoodVersion"] == v1.version
    assert view.template_version() == v1.version
