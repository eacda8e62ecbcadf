"""Hostile ModelDeployments: each is refused at apply by the schema, or reported in status.
Nothing crashes the operator and nothing loops."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from aliasop_dev import local

from resources import View
from support import Cluster, wait_for, worker_labels

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("operator")]

GOOD_MODEL = "models:/bikes@champion"

REFUSED_AT_APPLY: list[tuple[str, dict[str, Any], str]] = [
    ("no-scheme", {"model": "bikes@champion"}, "spec.model"),
    ("space", {"model": "models:/bi kes@champion"}, "spec.model"),
    ("shell", {"model": "models:/bikes@champion;rm -rf /"}, "spec.model"),
    ("emoji", {"model": "models:/\U0001f4a5@champion"}, "spec.model"),
    ("pinned-version", {"model": "models:/bikes/3"}, "spec.model"),
    ("huge-uri", {"model": "models:/" + "b" * 5000 + "@a"}, "spec.model"),
    ("missing-model", {}, "spec.model: Required value"),
    ("huge-replicas", {"model": GOOD_MODEL, "replicas": 10**12}, "spec.replicas"),
    ("negative-replicas", {"model": GOOD_MODEL, "replicas": -1}, "spec.replicas"),
    ("fast-poll", {"model": GOOD_MODEL, "pollIntervalSeconds": 0}, "spec.pollIntervalSeconds"),
    ("poll-text", {"model": GOOD_MODEL, "pollIntervalSeconds": "soon"}, "spec.pollIntervalSeconds"),
    ("port", {"model": GOOD_MODEL, "serving": {"port": 70000}}, "spec.serving.port"),
    ("workers", {"model": GOOD_MODEL, "serving": {"workers": 0}}, "spec.serving.workers"),
    (
        "quantity",
        {"model": GOOD_MODEL, "serving": {"resources": {"limits": {"cpu": "lots"}}}},
        "spec.serving.resources.limits.cpu",
    ),
    (
        "env-name",
        {"model": GOOD_MODEL, "serving": {"env": [{"value": "x"}]}},
        "spec.serving.env[0].name",
    ),
    (
        "secret-path",
        {"model": GOOD_MODEL, "serving": {"credentialsSecret": "../etc/passwd"}},
        "spec.serving.credentialsSecret",
    ),
    (
        "tracking-scheme",
        {"model": GOOD_MODEL, "trackingUri": "file:///etc/passwd"},
        "spec.trackingUri",
    ),
    ("history", {"model": GOOD_MODEL, "historyLimit": 10**6}, "spec.historyLimit"),
    (
        "deadline",
        {"model": GOOD_MODEL, "rollout": {"progressDeadlineSeconds": 1}},
        "spec.rollout.progressDeadlineSeconds",
    ),
]


def apply(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> Any:
    manifest = {
        "apiVersion": "aliasop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "labels": worker_labels()},
        "spec": spec,
    }
    return cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)


@pytest.mark.parametrize(
    ("case", "spec", "field"), REFUSED_AT_APPLY, ids=[c[0] for c in REFUSED_AT_APPLY]
)
def test_refused_by_the_schema(
    installed: Cluster, namespace: str, case: str, spec: dict[str, Any], field: str
) -> None:
    result = apply(installed, namespace, case, spec)
    assert result.returncode != 0, result.stdout
    assert field in result.stderr


@pytest.mark.parametrize(
    "name", ["a" * 64, "1bikes", "bikes.v2"], ids=["too-long", "digit-first", "dotted"]
)
def test_names_that_cannot_name_a_service_are_refused(
    installed: Cluster, namespace: str, name: str
) -> None:
    result = apply(installed, namespace, name, {"model": GOOD_MODEL})
    assert result.returncode != 0
    assert "it names the Deployment and Service" in result.stderr


@pytest.mark.parametrize(
    ("case", "spec", "reason", "message"),
    [
        ("unknown-model", {"model": "models:/no-such-model@x"}, "ModelNotFound", "does not exist"),
        (
            "dead-registry",
            {"model": GOOD_MODEL, "trackingUri": "http://127.0.0.1:9"},
            "RegistryUnavailable",
            "did not answer",
        ),
    ],
)
def test_accepted_but_unservable_is_reported_in_status(
    installed: Cluster,
    view: Callable[[str], View],
    case: str,
    spec: dict[str, Any],
    reason: str,
    message: str,
) -> None:
    target = view(case)
    apply(installed, target.namespace, case, {**spec, "pollIntervalSeconds": 5}).check_returncode()
    status = wait_for(lambda: (s := target.status()).get("message") and s, 30, message="status")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert reason in (conditions["Degraded"]["reason"], conditions["RegistryAvailable"]["reason"])
    assert message in status["message"]
    assert target.deployment() is None


def test_a_deployment_the_api_server_refuses_is_reported_not_retried_in_a_loop(
    two_versions: Any,
    model_name: str,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
    operator: local.LocalProcess,
) -> None:
    mdeps(
        "bikes",
        model=f"models:/{model_name}@champion",
        pollIntervalSeconds=5,
        # Our schema passes valueFrom through; the API server wants its key and name.
        serving={"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {}}}]},
    )
    target = view("bikes")
    status = wait_for(
        lambda: (s := target.status()).get("phase") == "Degraded" and s, 30, message="Degraded"
    )
    assert status["message"].startswith("the API server refused the Deployment")
    assert target.deployment() is None
    for _ in range(2):  # two more polls: the same refusal, reported once
        seen = target.status()["lastResolvedTime"]
        wait_for(
            lambda seen=seen: target.status()["lastResolvedTime"] > seen, 15, message="next poll"
        )
    assert target.events().count("DeploymentRefused") == 1
    assert operator.running


def test_a_quota_refusing_the_service_is_reported_until_it_is_lifted(
    two_versions: Any,
    model_name: str,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
    k8s: client.ApiClient,
    namespace: str,
) -> None:
    core = client.CoreV1Api(k8s)
    core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="no-services"),
            spec=client.V1ResourceQuotaSpec(hard={"services": "0"}),
        ),
    )
    mdeps("bikes", model=f"models:/{model_name}@champion", pollIntervalSeconds=5)
    target = view("bikes")
    status = wait_for(
        lambda: (s := target.status()).get("phase") == "Degraded" and s, 30, message="Degraded"
    )
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "KubernetesApiError"
    assert "forbidden" in status["message"]
    assert target.events().count("KubernetesApiError") == 1

    core.delete_namespaced_resource_quota("no-services", namespace)
    target.wait_serving(two_versions[0].version, timeout=60)  # the retries go on and succeed
