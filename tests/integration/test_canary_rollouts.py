"""The Canary strategy on the test cluster: a canary Deployment beside the stable one at each
step's replica ratio, pauses honoured, analyses measured against a real Prometheus, promotion
and abort, a restart of the operator mid-pause, a third version mid-canary, and a name that
another ModelDeployment holds.

Ready pods are followed through a watch (resources.Recorder), not sampled: across both sides
they never drop below spec.replicas."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aliasop_dev import bikes, local

from metric_sources import TestServer, expose
from resources import Recorder, Versions, View
from support import Cluster, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("operator")]

REPLICAS = 4
ERROR_RATIO = "aliasop_test_error_ratio"


def analysis(prometheus: str, count: int = 2) -> dict[str, Any]:
    return {
        "analysis": {
            "interval": 2,
            "count": count,
            "metrics": [
                {
                    "name": "error-ratio",
                    "prometheus": {
                        "address": prometheus,
                        "query": f'max({ERROR_RATIO}{{model="{{{{model}}}}",'
                        'version="{{version}}"})',
                    },
                    "thresholdRange": {"max": 0.05},
                }
            ],
        }
    }


def canary_spec(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"replicas": REPLICAS, "rollout": {"strategy": "Canary", "steps": list(steps)}}


def replicas(view: View, name: str) -> int | None:
    """spec.replicas of the Deployment `name`; None when there is none."""
    deployment = View(view.apps.api_client, view.namespace, name).deployment()
    return deployment.spec.replicas if deployment is not None else None


def at_step(view: View, step: int, phase: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        canary = view.status().get("canary") or {}
        return canary if (canary.get("step"), canary.get("phase")) == (step, phase) else None

    return wait_for(reached, 90, message=f"canary step {step} ({phase})")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_steps_weights_pause_analysis_and_promotion(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    server: TestServer,
    prometheus: str,
    installed: Cluster,
) -> None:
    v1, v2 = two_versions
    labels = {"model": model_name, "version": v2.version}
    expose(server, prometheus, ERROR_RATIO, labels, 0.01)
    bikes_view = serving_v1(
        **canary_spec(
            {"setWeight": 25},
            {"pause": {"seconds": 10}},
            {"setWeight": 50},
            analysis(prometheus),
        )
    )
    with Recorder(bikes_view, steady_version=v1.version) as recorder:
        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)

        paused = at_step(bikes_view, 2, "Paused")
        assert (replicas(bikes_view, "bikes"), replicas(bikes_view, "bikes-canary")) == (3, 1)
        assert paused["weight"] == 25 and paused["version"] == v2.version
        header, row = installed.kubectl(
            "get", "mdep", "bikes", "-n", bikes_view.namespace
        ).stdout.splitlines()
        shown = dict(zip(header.split(), row.split(), strict=True))
        assert (shown["ALIAS"], shown["SERVING"], shown["PHASE"]) == (
            v2.version,
            v1.version,
            "Progressing",
        )
        assert (shown["STEP"], shown["WEIGHT"]) == ("2", "25")

        analysing = at_step(bikes_view, 4, "Analysing")
        assert (replicas(bikes_view, "bikes"), replicas(bikes_view, "bikes-canary")) == (2, 2)
        waited = parse_time(analysing["stepStartedAt"]) - parse_time(paused["stepStartedAt"])
        assert waited.total_seconds() >= 10, "the pause was cut short"

        bikes_view.wait_serving(v2.version, timeout=120)
        wait_for(lambda: replicas(bikes_view, "bikes-canary") == 0, 60, message="canary at 0")
        recorder.check()
        assert recorder.fewest_ready is not None and recorder.fewest_ready >= REPLICAS
    status = bikes_view.status()
    assert status.get("canary") is None
    assert (status["history"][0]["version"], status["history"][0]["outcome"]) == (
        v2.version,
        "Succeeded",
    )
    assert bikes_view.template_version() == v2.version and replicas(bikes_view, "bikes") == 4
    events = bikes_view.events()
    assert {"RolloutStarted", "CanaryStep", "CanaryPromoted", "RolloutSucceeded"} <= set(events)


def test_a_failing_analysis_aborts_with_the_stable_side_untouched(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    server: TestServer,
    prometheus: str,
) -> None:
    v1, v2 = two_versions
    expose(server, prometheus, ERROR_RATIO, {"model": model_name, "version": v2.version}, 0.5)
    bikes_view = serving_v1(**canary_spec({"setWeight": 50}, analysis(prometheus)))
    stable_sets = {rs.metadata.name for rs in bikes_view.replica_sets()}
    with Recorder(bikes_view, steady_version=v1.version) as recorder:
        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)

        def aborted() -> dict[str, Any] | None:
            status = bikes_view.status()
            return status if status.get("failedVersion") == v2.version else None

        status = wait_for(aborted, 120, message="the canary to be aborted")
        wait_for(lambda: replicas(bikes_view, "bikes-canary") == 0, 60, message="canary at 0")
        recorder.check()
        assert recorder.fewest_ready is not None and recorder.fewest_ready >= REPLICAS
    assert status["phase"] == "Degraded"
    assert "error-ratio failed 1 of 1 measurements" in status["message"]
    assert status["servingVersion"] == v1.version and status.get("canary") is None
    assert (status["history"][0]["version"], status["history"][0]["outcome"]) == (
        v2.version,
        "Failed",
    )
    # The stable side: never another version, back at full size.
    assert bikes_view.template_version() == v1.version and replicas(bikes_view, "bikes") == 4
    stable = bikes_view.deployment()
    assert stable is not None
    assert {rs.metadata.name for rs in bikes_view.replica_sets()} - stable_sets == {
        rs.metadata.name
        for rs in bikes_view.replica_sets()
        if rs.metadata.labels.get("aliasop.io/variant") == "canary"
    }
    assert "RolloutFailed" in bikes_view.events()


def test_an_operator_killed_mid_pause_resumes_the_same_step(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    operator: local.LocalProcess,
) -> None:
    v2 = two_versions[1]
    bikes_view = serving_v1(**canary_spec({"setWeight": 25}, {"pause": {"seconds": 40}}))
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    paused = at_step(bikes_view, 2, "Paused")
    halfway = parse_time(paused["stepStartedAt"]) + timedelta(seconds=20)
    wait_for(lambda: datetime.now(UTC) >= halfway, 30, message="the pause half over")

    operator.kill()
    killed = datetime.now(UTC).replace(microsecond=0)
    operator.start()

    def passed_again() -> dict[str, Any] | None:
        status = bikes_view.status()
        return status if parse_time(status["lastResolvedTime"]) > killed else None

    resumed = wait_for(passed_again, 60, message="a pass of the restarted operator")["canary"]
    assert resumed is not None, "the canary was dropped"
    assert (resumed["step"], resumed["phase"]) == (2, "Paused")
    assert resumed["stepStartedAt"] == paused["stepStartedAt"]
    assert resumed["pauseUntil"] == paused["pauseUntil"]

    # The pause ends when it was to end (a pause started afresh would end 20 s later).
    status = bikes_view.wait_serving(v2.version, timeout=120)
    rollouts = [h for h in status["history"] if h["version"] == v2.version]
    assert [h["outcome"] for h in rollouts] == ["Succeeded"]  # one rollout, not two
    late = parse_time(rollouts[0]["finishedAt"]) - parse_time(paused["pauseUntil"])
    assert late.total_seconds() < 15


def test_a_third_version_mid_canary_restarts_it_with_that_version(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    register: Callable[[str], bikes.RegisteredVersion],
    serving_v1: Callable[..., View],
    installed: Cluster,
) -> None:
    v2 = two_versions[1]
    bikes_view = serving_v1(**canary_spec({"setWeight": 25}, {"pause": {}}))
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    at_step(bikes_view, 2, "Paused")
    v3 = register("linear")
    bikes.set_alias(mlflow_uri, model_name, "champion", v3.version)

    def restarted() -> dict[str, Any] | None:
        canary = bikes_view.status().get("canary") or {}
        return canary if (canary.get("version"), canary.get("step")) == (v3.version, 2) else None

    wait_for(restarted, 90, message=f"a canary of version {v3.version} at its pause")
    canary = View(bikes_view.apps.api_client, bikes_view.namespace, "bikes-canary")
    assert canary.template_version() == v3.version
    history = [(h["version"], h["outcome"]) for h in bikes_view.status()["history"]]
    assert history[:2] == [(v3.version, "Progressing"), (v2.version, "Superseded")]
    assert "CanaryRestarted" in bikes_view.events()

    # A promotion of another version does nothing: two passes later (each writes
    # lastResolvedTime here) the canary still waits at its pause.
    promote = ("annotate", "--overwrite", "mdep", "bikes", "-n", bikes_view.namespace)
    installed.kubectl(*promote, f"aliasop.io/promote={v2.version}")
    for _ in range(2):
        resolved = bikes_view.status()["lastResolvedTime"]
        wait_for(
            lambda since=resolved: bikes_view.status()["lastResolvedTime"] != since,
            20,
            message="a pass",
        )
    canary = bikes_view.status()["canary"]
    assert (canary["version"], canary["step"], canary["phase"]) == (v3.version, 2, "Paused")
    assert bikes_view.status()["servingVersion"] != v3.version
    # A promotion of the canary's version ends its pause without seconds.
    installed.kubectl(*promote, f"aliasop.io/promote={v3.version}")
    bikes_view.wait_serving(v3.version, timeout=120)


def test_a_name_another_resource_holds_is_reported_not_taken(
    two_versions: Versions,
    model_name: str,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
) -> None:
    """`bikes-canary`, a ModelDeployment of its own, holds the names of bikes' canary side
    (its Deployment and Service are `bikes-canary`): bikes, with the Canary strategy, takes
    neither, and says why, until the name is free."""
    v1 = two_versions[0]
    uri = f"models:/{model_name}@champion"
    mdeps("bikes-canary", model=uri, replicas=1)
    neighbour = view("bikes-canary")
    neighbour.wait_serving(v1.version)
    before = neighbour.mdep()["metadata"]["uid"]
    mdeps("bikes", model=uri, pollIntervalSeconds=5, **canary_spec({"setWeight": 25}))
    bikes_view = view("bikes")

    def clash() -> dict[str, Any] | None:
        status = bikes_view.status()
        return status if status.get("message", "").startswith("the Service bikes-canary") else None

    status = wait_for(clash, 60, message="the name clash in status")
    assert "belongs to another owner" in status["message"]
    assert status["phase"] == "Degraded"
    assert "NameClash" in bikes_view.events()
    service = neighbour.core.read_namespaced_service("bikes-canary", neighbour.namespace)
    assert [r.uid for r in service.metadata.owner_references] == [before]
    assert "aliasop.io/variant" not in service.spec.selector  # not bikes' canary Service
    assert bikes_view.deployment() is None  # nothing applied while the name is taken

    neighbour.custom.delete_namespaced_custom_object(
        "aliasop.io", "v1alpha1", neighbour.namespace, "modeldeployments", "bikes-canary"
    )
    bikes_view.wait_serving(v1.version, timeout=120)
