"""A version whose pods never become available is rolled back, and not retried until its alias
moves away and back.

kwok makes the bad version's pods run but never turn Ready: for that version's pods in the test
namespace, a Stage of the test's own, with a weight, takes precedence over the cluster's default
pod-ready stage from tests/cluster/stages.yaml."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from aliasop_dev import bikes

from resources import NeverReady, Recorder, Versions, View
from support import wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("operator")]

POLL_SECONDS = 5
DEADLINE_SECONDS = 30  # the smallest progressDeadlineSeconds the CRD accepts


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def test_failed_rollout_rolls_back_and_waits_for_the_alias_to_move(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    never_ready: NeverReady,
) -> None:
    v1, v2 = two_versions
    bikes_view = serving_v1(
        replicas=2,
        pollIntervalSeconds=POLL_SECONDS,
        rollout={"progressDeadlineSeconds": DEADLINE_SECONDS},
    )
    assert bikes_view.pods_by_version() == {v1.version: 2}

    never_ready.start(v2.version)
    with Recorder(bikes_view, steady_version=v1.version) as recorder:
        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)

        # The rollout to v2 starts, its surge pod never turns Ready, the Deployment gives up
        # after its deadline and the operator rolls back to v1.
        def rolled_back() -> dict[str, Any] | None:
            recorder.check()
            status = bikes_view.status()
            history = [(h["version"], h["reason"], h["outcome"]) for h in status.get("history", [])]
            done = history[:1] == [(v1.version, "Rollback", "Succeeded")]
            return status if done else None

        status = wait_for(rolled_back, DEADLINE_SECONDS + 60, message="the rollback to v1")
        assert "ProgressDeadlineExceeded" in recorder.progressing_reasons
        assert bikes_view.template_version() == v1.version
        assert status["phase"] == "Degraded"
        assert f"version {v2.version} failed to roll out" in status["message"]
        assert status["failedVersion"] == v2.version
        assert status["servingVersion"] == status["lastGoodVersion"] == v1.version
        assert status["aliasVersion"] == v2.version
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "RolloutFailed")
        history = [(h["version"], h["reason"], h["outcome"]) for h in status["history"]]
        assert history == [
            (v1.version, "Rollback", "Succeeded"),
            (v2.version, "AliasMoved", "Failed"),
            (v1.version, "Created", "Succeeded"),
        ]
        wait_for(lambda: "RolloutFailed" in bikes_view.events(), 30, message="RolloutFailed")
        # The rollback reused v1's ReplicaSet; v2's surge pod is gone.
        assert len(bikes_view.replica_sets()) == 2
        wait_for(lambda: recorder.versions() == {v1.version}, 30, message="v2's pod to go")

        # The alias still points at v2: the operator keeps resolving it and leaves v1 alone.
        first = status["lastResolvedTime"]

        def polled_twice_more() -> bool:
            recorder.check()
            current = bikes_view.status()
            assert bikes_view.template_version() == v1.version, "v2 was retried"
            assert current["failedVersion"] == v2.version
            assert current["phase"] == "Degraded"
            return seconds_between(first, current["lastResolvedTime"]) >= 2 * POLL_SECONDS

        wait_for(polled_twice_more, 4 * POLL_SECONDS, message="two more polls")
        assert bikes_view.events().count("RolloutFailed") == 1

    recorder.check()
    # v1's two pods served throughout, the same two pods: never fewer Ready (maxUnavailable 0).
    assert recorder.fewest_steady_ready == 2
    assert len(recorder.uids_by_version[v1.version]) == 2
    # v2 got exactly one pod (maxSurge 1), which kwok never let turn Ready, and no retry.
    assert len(recorder.uids_by_version[v2.version]) == 1
    assert v2.version not in recorder.ever_ready

    # The alias moves away and back, and v2 is healthy now: it is tried again and serves.
    never_ready.stop()
    bikes.set_alias(mlflow_uri, model_name, "champion", v1.version)
    status = wait_for(
        lambda: (s := bikes_view.status()).get("aliasVersion") == v1.version and s,
        3 * POLL_SECONDS,
        message="the operator to see the alias on v1",
    )
    assert status.get("failedVersion") is None
    bikes_view.wait_serving(v1.version, timeout=3 * POLL_SECONDS)
    assert bikes_view.template_version() == v1.version

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    status = bikes_view.wait_serving(v2.version, timeout=60)
    assert status.get("failedVersion") is None
    assert status["aliasVersion"] == status["targetVersion"] == v2.version
    assert bikes_view.pods_by_version() == {v2.version: 2}
    history = [(h["version"], h["reason"], h["outcome"]) for h in status["history"]]
    assert history[0] == (v2.version, "AliasMoved", "Succeeded")
    assert len(bikes_view.replica_sets()) == 2  # v2's ReplicaSet, reused
