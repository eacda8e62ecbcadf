"""The registry told what serves (ALIASOP_REGISTRY_WRITE_BACK, on for the tests' operator):
tags written on model versions and read back through MLflow's API, with MLflow's webhooks on
and no loop; onFailure: RevertAlias moves the alias back after a rollback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mlflow import MlflowClient

from aliasop_dev import bikes, local

from resources import NeverReady, Versions, View, deliveries
from support import wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("operator")]


def tag(client: MlflowClient, model: str, version: str, key: str) -> str | None:
    value: str | None = client.get_model_version(model, version).tags.get(key)
    return value


@pytest.mark.usefixtures("mlflow_webhook")
def test_versions_are_tagged_where_they_serve_and_the_tags_wake_nothing(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    operator: local.LocalProcess,
) -> None:
    v1, v2 = two_versions
    client = MlflowClient(tracking_uri=mlflow_uri)
    ignored = deliveries(operator).get("ignored", 0)
    bikes_view = serving_v1(replicas=1)
    key = f"aliasop/{bikes_view.namespace}/bikes"
    wait_for(lambda: tag(client, model_name, v1.version, key) == "serving", 30, message="v1 tag")
    wait_for(lambda: deliveries(operator).get("ignored", 0) > ignored, 15, message="its delivery")
    before = deliveries(operator)

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    bikes_view.wait_serving(v2.version)
    wait_for(lambda: tag(client, model_name, v2.version, key) == "serving", 30, message="v2 tag")
    assert tag(client, model_name, v1.version, key) is None  # serves there no more

    # MLflow delivers each of the operator's tag writes (v2 set, v1 deleted) back to it: they
    # are ignored, and the only delivery acted on is the alias move.
    def counted() -> dict[str, float]:
        after = deliveries(operator)
        return {r: after.get(r, 0) - before.get(r, 0) for r in ("accepted", "ignored")}

    wait_for(lambda: counted()["ignored"] >= 2, 15, message="the tag deliveries")
    assert counted() == {"accepted": 1, "ignored": 2}


def test_revert_alias_moves_the_alias_back_after_a_rollback(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    never_ready: NeverReady,
    serving_v1: Callable[..., View],
) -> None:
    v1, v2 = two_versions
    client = MlflowClient(tracking_uri=mlflow_uri)
    never_ready.start(v2.version)
    bikes_view = serving_v1(
        replicas=1, rollout={"progressDeadlineSeconds": 30, "onFailure": "RevertAlias"}
    )
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)

    def alias_back() -> Any:
        return client.get_model_version_by_alias(model_name, "champion").version == v1.version

    wait_for(alias_back, 90, message="@champion back at version 1")
    key = f"aliasop/{bikes_view.namespace}/bikes"
    rolled_back = tag(client, model_name, v2.version, key)
    assert rolled_back is not None and rolled_back.startswith("rolled back: version 2")
    status = bikes_view.wait_serving(v1.version)
    assert status.get("failedVersion") is None  # the alias moved away from it: nothing held
    assert bikes_view.pods_by_version() == {v1.version: 1}
