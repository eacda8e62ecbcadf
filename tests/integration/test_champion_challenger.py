"""Champion-challenger on the test cluster: a second alias of the model served beside the main
one, each side following its own alias, capacity kept while the challenger comes and goes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from aliasop_dev import bikes

from resources import Recorder, Versions, View
from support import wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("operator")]


def side(view: View, name: str) -> View:
    return View(view.apps.api_client, view.namespace, name)


def service_selector(view: View, name: str) -> dict[str, str]:
    service: client.V1Service = view.core.read_namespaced_service(name, view.namespace)
    return dict(service.spec.selector)


def test_the_challenger_follows_its_own_alias_beside_the_main_one(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    register: Callable[[str], bikes.RegisteredVersion],
    serving_v1: Callable[..., View],
) -> None:
    v1, v2 = two_versions
    bikes.set_alias(mlflow_uri, model_name, "challenger", v2.version)
    bikes_view = serving_v1(replicas=4)
    main_sets = {rs.metadata.name for rs in bikes_view.replica_sets()}

    with Recorder(bikes_view, steady_version=v1.version) as recorder:
        # Added to a resource that serves: the main side restarts once (its pods gain the
        # variant label) and makes room for the challenger's pod, never below 4 Ready.
        bikes_view.patch_spec({"challenger": {"alias": "challenger", "weight": 25}})

        def both_serving() -> dict[str, Any] | None:
            status = bikes_view.status()
            challenger = status.get("challenger") or {}
            done = challenger.get("servingVersion") == v2.version and status["phase"] == "Ready"
            return status if done else None

        status = wait_for(both_serving, 120, message="main and challenger serving")
        wait_for(
            lambda: bikes_view.pods_by_version() == {v1.version: 3, v2.version: 1},
            60,
            message="3 main pods and 1 challenger pod",
        )
        recorder.check()
        assert recorder.fewest_ready is not None and recorder.fewest_ready >= 4
    assert status["servingVersion"] == v1.version
    assert status["challenger"]["aliasVersion"] == v2.version
    assert service_selector(bikes_view, "bikes-stable")["aliasop.io/variant"] == "main"
    assert service_selector(bikes_view, "bikes-challenger")["aliasop.io/variant"] == "challenger"
    assert "aliasop.io/variant" not in service_selector(bikes_view, "bikes")  # both sides

    # The challenger's alias moves: its side only.
    v3 = register("linear")
    bikes.set_alias(mlflow_uri, model_name, "challenger", v3.version)
    challenger = side(bikes_view, "bikes-challenger")
    wait_for(lambda: challenger.template_version() == v3.version, 60, message="challenger at v3")
    wait_for(
        lambda: (bikes_view.status().get("challenger") or {}).get("servingVersion") == v3.version,
        60,
        message="challenger serving v3",
    )
    assert bikes_view.template_version() == v1.version
    assert "ChallengerMoved" in bikes_view.events()
    main = {
        rs.metadata.name for rs in bikes_view.replica_sets() if "challenger" not in rs.metadata.name
    }
    assert len(main - main_sets) == 1  # the one restart for the variant label, no more

    # Removed: the main side grows back first, then the challenger's pods go.
    bikes_view.patch_spec({"challenger": None})
    wait_for(lambda: challenger.deployment() is None, 90, message="the challenger to go")
    wait_for(lambda: bikes_view.pods_by_version() == {v1.version: 4}, 60, message="4 main pods")
    assert bikes_view.status().get("challenger") is None
