"""The operator against a real MLflow server and the real test cluster."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from mlflow import MlflowClient

from aliasop_dev import bikes, local

from resources import Versions, View
from support import Cluster, wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("operator")]


def test_create_deploys_the_alias_version(
    two_versions: Versions, model_name: str, serving_v1: Callable[..., View]
) -> None:
    v1, _ = two_versions
    bikes_view = serving_v1(replicas=2)
    status = bikes_view.status()
    assert status["aliasVersion"] == status["targetVersion"] == v1.version
    assert status["lastGoodVersion"] == v1.version
    deployment = bikes_view.deployment()
    assert deployment is not None
    assert deployment.status.available_replicas == 2
    template = deployment.spec.template
    assert template.metadata.annotations["aliasop.io/model-uri"] == f"models:/{model_name}/1"
    assert template.metadata.annotations["aliasop.io/run-id"] == v1.run_id
    assert bikes_view.pods_by_version() == {v1.version: 2}
    service = bikes_view.core.read_namespaced_service("bikes", bikes_view.namespace)
    assert service.metadata.owner_references[0].kind == "ModelDeployment"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "Progressing": "False",
        "Degraded": "False",
        "RegistryAvailable": "True",
        "SignatureCompatible": "True",  # nothing served before it: nothing to break
        # The session's operator writes back to the registry, and grants every namespace.
        "RegistryWritesGranted": "True",
    }
    wait_for(lambda: "RolloutSucceeded" in bikes_view.events(), 30, message="RolloutSucceeded")


def test_alias_moves_roll_forward_and_back(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
) -> None:
    v1, v2 = two_versions
    bikes_view = serving_v1(replicas=2)
    first_rs = {rs.metadata.name for rs in bikes_view.replica_sets()}

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    status = bikes_view.wait_serving(v2.version)
    assert bikes_view.pods_by_version() == {v2.version: 2}
    replica_sets = {rs.metadata.name: rs for rs in bikes_view.replica_sets()}
    new = set(replica_sets) - first_rs
    assert len(new) == 1, "a rolling update makes one new ReplicaSet"
    assert replica_sets[new.pop()].spec.replicas == 2
    assert all(replica_sets[name].spec.replicas == 0 for name in first_rs)
    history = [(h["version"], h["reason"], h["outcome"]) for h in status["history"]]
    assert history[:2] == [
        (v2.version, "AliasMoved", "Succeeded"),
        (v1.version, "Created", "Succeeded"),
    ]

    bikes.set_alias(mlflow_uri, model_name, "champion", v1.version)
    status = bikes_view.wait_serving(v1.version)
    assert bikes_view.pods_by_version() == {v1.version: 2}
    assert [h["version"] for h in status["history"]] == [v1.version, v2.version, v1.version]
    assert {"AliasMoved", "RolloutStarted", "RolloutSucceeded"} <= set(bikes_view.events())


def test_paused_reports_the_move_but_keeps_the_pods(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
) -> None:
    v1, v2 = two_versions
    bikes_view = serving_v1(replicas=1)
    bikes_view.patch_spec({"paused": True})
    wait_for(lambda: bikes_view.status().get("phase") == "Paused", 30, message="Paused")
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    status = wait_for(
        lambda: (s := bikes_view.status()).get("aliasVersion") == v2.version and s,
        30,
        message="aliasVersion to follow the alias",
    )
    assert status["servingVersion"] == v1.version
    assert bikes_view.template_version() == v1.version
    assert bikes_view.pods_by_version() == {v1.version: 1}

    bikes_view.patch_spec({"paused": False})
    bikes_view.wait_serving(v2.version)


@pytest.mark.parametrize("operator_running", [True, False], ids=["running", "stopped"])
def test_delete_removes_the_children(
    serving_v1: Callable[..., View], operator: local.LocalProcess, operator_running: bool
) -> None:
    """The operator keeps no finalizer: deleting a ModelDeployment never waits for it."""
    bikes_view = serving_v1(replicas=1)
    assert not bikes_view.mdep()["metadata"].get("finalizers")

    def children_gone() -> bool:
        services = bikes_view.core.list_namespaced_service(bikes_view.namespace).items
        return bikes_view.deployment() is None and not services

    if not operator_running:
        operator.stop()
    try:
        bikes_view.custom.delete_namespaced_custom_object(
            "aliasop.io", "v1alpha1", bikes_view.namespace, "modeldeployments", "bikes"
        )
        wait_for(children_gone, 60, message="Deployment and Service to be garbage-collected")
    finally:
        if not operator_running:
            operator.start()


def test_a_resource_recreated_under_its_name_is_tracked_afresh(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    mdeps: Callable[..., Any],
    serving_v1: Callable[..., View],
) -> None:
    """Deleted and created again at once (as a GitOps tool replacing it does): the new
    object is tracked with its own status and owns the children."""
    _, v2 = two_versions
    bikes_view = serving_v1(replicas=1)
    old_uid = bikes_view.mdep()["metadata"]["uid"]
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    bikes_view.custom.delete_namespaced_custom_object(
        "aliasop.io", "v1alpha1", bikes_view.namespace, "modeldeployments", "bikes"
    )
    new_uid = mdeps(
        "bikes", model=f"models:/{model_name}@champion", replicas=1, pollIntervalSeconds=5
    )["metadata"]["uid"]
    assert new_uid != old_uid

    status = bikes_view.wait_serving(v2.version)
    # The old object's history went with it. (Its Deployment may still be there for the new
    # one to adopt, if the garbage collector has not removed it yet.)
    assert status["history"][0]["version"] == v2.version
    assert len(status["history"]) <= 2

    def owned_by_the_new_one() -> bool:
        deployment = bikes_view.deployment()
        owners = deployment.metadata.owner_references if deployment else []
        return [owner.uid for owner in owners or []] == [new_uid]

    wait_for(owned_by_the_new_one, 60, message="the Deployment owned by the new object")
    assert bikes_view.pods_by_version() == {v2.version: 1}


def test_invalid_model_uri_is_refused_at_apply(installed: Cluster, restricted: str) -> None:
    manifest = f"""
apiVersion: aliasop.io/v1alpha1
kind: ModelDeployment
metadata: {{name: broken, namespace: {restricted}}}
spec: {{model: "bikes@champion", pollIntervalSeconds: 1}}
"""
    result = installed.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert result.returncode != 0
    assert "spec.model" in result.stderr and "models:/" in result.stderr
    assert (
        "spec.pollIntervalSeconds" in result.stderr
        and "greater than or equal to 5" in result.stderr
    )


def test_missing_model_is_reported(mdeps: Callable[..., Any], view: Callable[[str], View]) -> None:
    mdeps("ghost", model="models:/no-such-model@champion", pollIntervalSeconds=5)
    ghost = view("ghost")
    status = wait_for(
        lambda: (s := ghost.status()).get("phase") == "Degraded" and s, 30, message="Degraded"
    )
    assert status["message"] == "registered model 'no-such-model' does not exist"
    assert ghost.deployment() is None
    wait_for(lambda: "ModelNotFound" in ghost.events(), 30, message="ModelNotFound event")


def test_deleted_alias_degrades_and_leaves_the_deployment_untouched(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
) -> None:
    v1, _ = two_versions
    bikes_view = serving_v1(replicas=2)
    before = bikes_view.deployment()
    assert before is not None

    MlflowClient(tracking_uri=mlflow_uri).delete_registered_model_alias(model_name, "champion")
    status = wait_for(
        lambda: (s := bikes_view.status()).get("phase") == "Degraded" and s, 30, message="Degraded"
    )
    assert status["message"] == f"model {model_name!r} has no alias 'champion' (aliases: none)"
    assert status["servingVersion"] == v1.version
    after = bikes_view.deployment()
    assert after is not None
    assert after.metadata.generation == before.metadata.generation
    assert after.spec.template == before.spec.template
    assert bikes_view.pods_by_version() == {v1.version: 2}


def test_operator_restart_changes_nothing(
    serving_v1: Callable[..., View],
    operator: local.LocalProcess,
) -> None:
    bikes_view = serving_v1(replicas=2)
    before = bikes_view.deployment()
    replica_sets = {rs.metadata.name for rs in bikes_view.replica_sets()}

    operator.stop()
    restarted_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    operator.start()  # boots in seconds, so its first resolution is stamped after restarted_at
    wait_for(
        lambda: (bikes_view.status().get("lastResolvedTime") or "") > restarted_at,
        60,
        message="the restarted operator to resolve the alias",
    )
    after = bikes_view.deployment()
    assert after is not None and before is not None
    assert after.metadata.generation == before.metadata.generation
    assert after.spec.template == before.spec.template
    assert {rs.metadata.name for rs in bikes_view.replica_sets()} == replica_sets
    assert bikes_view.status()["phase"] == "Ready"


def test_operator_rbac_is_enough_and_no_more(
    installed: Cluster,
    operator: local.LocalProcess,
    serving_v1: Callable[..., View],
) -> None:
    """The operator runs on the ServiceAccount token from manifests/ (see conftest): from its
    start to a resource serving it is never refused anything, and it can neither read
    Secrets, nor delete Pods, nor write a ModelDeployment's spec (only its status)."""
    operator.stop()
    operator.start()
    serving_v1(replicas=1)
    account = "system:serviceaccount:aliasop-system:aliasop"
    assert f'User "{account}" cannot' not in operator.output()
    for verb, resource in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("delete", "pods"),
        ("patch", "modeldeployments.aliasop.io"),
    ]:
        answer = installed.kubectl(
            "auth", "can-i", verb, resource, "-A", "--as", account, check=False
        )
        assert answer.stdout.strip() == "no", (verb, resource)
    assert (
        installed.kubectl("auth", "can-i", "patch", "deployments", "--as", account).stdout.strip()
        == "yes"
    )
