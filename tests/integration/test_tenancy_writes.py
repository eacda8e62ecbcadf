"""Registry writes are scoped (issue 26): with write-back on, a namespace writes to the
registry only for the models the operator grants it (ALIASOP_REGISTRY_WRITE_GRANTS), and a
revert moves an alias back only while it still points at the version that failed. Each test
runs an operator of its own with its grants, against the real MLflow and the test cluster."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from mlflow import MlflowClient
from shard_operator import shard_operator

from aliasop_dev import bikes

from resources import NeverReady, Versions, View
from support import wait_for

pytestmark = pytest.mark.timeout(240)

REVERTING = {"progressDeadlineSeconds": 30, "onFailure": "RevertAlias"}


def alias_version(client_: MlflowClient, model: str) -> str:
    return str(client_.get_model_version_by_alias(model, "champion").version)


def aliasop_tags(client_: MlflowClient, model: str, version: str) -> dict[str, str]:
    tags = client_.get_model_version(model, version).tags
    return {key: value for key, value in tags.items() if key.startswith("aliasop/")}


def rolled_back(view: View, version: str) -> Callable[[], dict[str, Any] | None]:
    def done() -> dict[str, Any] | None:
        status = view.status()
        return status if status.get("failedVersion") == version else None

    return done


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == type_)
    return found


def test_a_tenant_without_a_grant_cannot_revert_another_teams_alias(
    k8s: client.ApiClient,
    operator_kubeconfig: str,
    mlflow_uri: str,
    two_versions: Versions,
    model_name: str,
    never_ready: NeverReady,
    restricted: str,
    view: Callable[[str], View],
    tmp_path: Path,
) -> None:
    """The fraud team's namespace may write to its model; a tenant elsewhere follows the same
    alias with onFailure: RevertAlias, and its copy fails on the team's new version."""
    v1, v2 = two_versions
    mlflow = MlflowClient(tracking_uri=mlflow_uri)
    grants = json.dumps({"fraud-team": [model_name]})
    with shard_operator(
        k8s,
        operator_kubeconfig,
        mlflow_uri,
        tmp_path,
        ALIASOP_REGISTRY_WRITE_BACK="true",
        ALIASOP_REGISTRY_WRITE_GRANTS=grants,
    ) as operator:
        never_ready.start(v2.version)
        operator.create(
            restricted,
            "copy",
            model=f"models:/{model_name}@champion",
            replicas=1,
            pollIntervalSeconds=5,
            rollout=REVERTING,
        )
        copy = view("copy")
        status = copy.wait_serving(v1.version)
        granted = condition(status, "RegistryWritesGranted")
        assert (granted["status"], granted["reason"]) == ("False", "WritesNotGranted")
        assert f"namespace {restricted} has no grant" in granted["message"]

        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)  # the team's move
        status = wait_for(rolled_back(copy, v2.version), 120, message="the copy rolled back")
        wait_for(lambda: "AliasNotReverted" in copy.events(), 30, message="AliasNotReverted")

    assert alias_version(mlflow, model_name) == v2.version  # the team's alias stands
    assert aliasop_tags(mlflow, model_name, v1.version) == {}  # and no tag was written
    assert aliasop_tags(mlflow, model_name, v2.version) == {}
    assert copy.pods_by_version() == {v1.version: 1}  # the copy itself rolled back
    history = {entry["version"]: entry for entry in status["history"]}
    assert "not moved back: this namespace has no grant" in history[v2.version]["message"]
    assert copy.events().count("WritesNotGranted") == 1


def test_a_revert_leaves_a_move_made_since_the_failure(
    k8s: client.ApiClient,
    operator_kubeconfig: str,
    mlflow_uri: str,
    two_versions: Versions,
    model_name: str,
    never_ready: NeverReady,
    restricted: str,
    view: Callable[[str], View],
    tmp_path: Path,
) -> None:
    """Granted, the revert reads the alias right before writing: a person moved it on to
    version 3 while version 2 was failing, and their move stands. The operator polls once a
    day, so it learns of version 2 only from a webhook delivery, and of version 3 not at
    all before the revert."""
    v1, v2 = two_versions
    mlflow = MlflowClient(tracking_uri=mlflow_uri)
    v3 = bikes.train_and_register(mlflow_uri, model_name, kind="linear").version
    grants = json.dumps({restricted: [model_name]})
    with shard_operator(
        k8s,
        operator_kubeconfig,
        mlflow_uri,
        tmp_path,
        ALIASOP_REGISTRY_WRITE_BACK="true",
        ALIASOP_REGISTRY_WRITE_GRANTS=grants,
    ) as operator:
        never_ready.start(v2.version)
        operator.create(
            restricted,
            "bikes",
            model=f"models:/{model_name}@champion",
            replicas=1,
            pollIntervalSeconds=86400,
            rollout=REVERTING,
        )
        bikes_view = view("bikes")
        status = bikes_view.wait_serving(v1.version)
        granted = condition(status, "RegistryWritesGranted")
        assert (granted["status"], granted["reason"]) == ("True", "WritesGranted")

        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
        operator.alias_moved(model_name, "champion", v2.version)
        wait_for(lambda: bikes_view.template_version() == v2.version, 30, message="v2 applied")
        bikes.set_alias(mlflow_uri, model_name, "champion", v3)  # a person's move, unseen

        status = wait_for(rolled_back(bikes_view, v2.version), 120, message="v2 rolled back")
        wait_for(lambda: "AliasNotReverted" in bikes_view.events(), 30, message="the record")

    assert alias_version(mlflow, model_name) == v3  # not overwritten
    assert "AliasReverted" not in bikes_view.events()
    history = {entry["version"]: entry for entry in status["history"]}
    assert (
        f"not moved back: it points at version {v3} now, not at the failed version "
        f"{v2.version}" in history[v2.version]["message"]
    )
    # Granted, the registry was told the rest.
    key = f"aliasop/{restricted}/bikes"
    assert aliasop_tags(mlflow, model_name, v2.version)[key].startswith("rolled back: version")
    assert aliasop_tags(mlflow, model_name, v1.version) == {key: "serving"}
