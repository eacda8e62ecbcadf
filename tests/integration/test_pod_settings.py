"""Pod settings of spec.serving against the real API server: accepted and rendered into the
Deployment's pod template, pods scheduled with them and Ready; invalid ones refused at
`kubectl apply` by the CRD's schema (Kubernetes' own core/v1 schemas) naming the field."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from aliasop.builders import IN_FLIGHT_SECONDS

from resources import Versions, View
from support import Cluster, wait_for, worker_labels

pytestmark = pytest.mark.usefixtures("operator")

NODE = "aliasop-node-0"  # the test cluster's one kwok node: labelled type=kwok, no taints
GOOD_MODEL = "models:/bikes@champion"


@pytest.fixture
def priority_class(k8s: client.ApiClient) -> Iterator[str]:
    """A PriorityClass of this test's own (they are cluster-scoped)."""
    api = client.SchedulingV1Api(k8s)
    name = f"aliasop-test-{uuid.uuid4().hex[:8]}"
    api.create_priority_class(
        client.V1PriorityClass(metadata=client.V1ObjectMeta(name=name), value=1000)
    )
    try:
        yield name
    finally:
        api.delete_priority_class(name)


def pod_settings(service_account: str, priority_class: str) -> dict[str, Any]:
    """Every pod setting, each one satisfied by the kwok node."""
    return {
        "serviceAccountName": service_account,
        "nodeSelector": {"type": "kwok"},
        # The node has no taint; a toleration only allows, it never requires.
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [NODE],
                                }
                            ]
                        }
                    ]
                }
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchLabels": {"app.kubernetes.io/instance": "bikes"}
                            },
                        },
                    }
                ]
            },
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "bikes"}},
            }
        ],
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "priorityClassName": priority_class,
        "podLabels": {"team": "forecasting", "example.com/cost-center": "42"},
        "podAnnotations": {"prometheus.io/scrape": "true", "example.com/note": "any text: ok"},
    }


@pytest.mark.timeout(240)
def test_pod_settings_reach_the_pods_which_turn_ready(
    two_versions: Versions,
    serving_v1: Callable[..., View],
    k8s: client.ApiClient,
    namespace: str,
    priority_class: str,
) -> None:
    core = client.CoreV1Api(k8s)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="model-reader"))
    )
    settings = pod_settings("model-reader", priority_class)
    bikes_view = serving_v1(serving=settings)  # waits until version 1 serves: pods Ready

    deployment = bikes_view.deployment()
    assert deployment is not None
    template = client.ApiClient().sanitize_for_serialization(deployment.spec.template)
    pod_spec = template["spec"]
    for field in (
        "serviceAccountName",
        "nodeSelector",
        "tolerations",
        "affinity",
        "topologySpreadConstraints",
        "imagePullSecrets",
        "priorityClassName",
    ):
        assert pod_spec[field] == settings[field], field
    assert pod_spec["automountServiceAccountToken"] is False
    labels, annotations = template["metadata"]["labels"], template["metadata"]["annotations"]
    assert labels.items() >= settings["podLabels"].items()
    assert labels["app.kubernetes.io/instance"] == "bikes"
    assert labels["aliasop.io/model-version"] == two_versions[0].version
    assert annotations.items() >= settings["podAnnotations"].items()
    assert "aliasop.io/model-uri" in annotations

    pods = core.list_namespaced_pod(namespace, label_selector="team=forecasting").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name == NODE
        assert pod.spec.service_account_name == "model-reader"
        assert pod.spec.priority == 1000  # the API server resolved the PriorityClass
        assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)

    # Settings taken out of the spec leave the pod template: the operator's apply owns them.
    bikes_view.patch_spec({"serving": {"tolerations": None, "podLabels": None}})

    def dropped() -> bool:
        current = bikes_view.deployment()
        assert current is not None
        spec = current.spec.template
        return not spec.spec.tolerations and "team" not in spec.metadata.labels

    wait_for(dropped, 30, message="tolerations and podLabels gone from the pod template")


def apply(cluster: Cluster, namespace: str, name: str, serving: dict[str, Any]) -> Any:
    manifest = {
        "apiVersion": "aliasop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "labels": worker_labels()},
        "spec": {"model": GOOD_MODEL, "serving": serving},
    }
    return cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)


def required_node(expression: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [expression]}]
            }
        }
    }


# (case, spec.serving, what stderr must say)
REFUSED_AT_APPLY: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "toleration-operator",
        {"tolerations": [{"key": "dedicated", "operator": "Sometimes"}]},
        ["spec.serving.tolerations[0].operator", "Unsupported value", '"Exists"'],
    ),
    (
        "toleration-seconds-type",
        {"tolerations": [{"key": "spot", "effect": "NoExecute", "tolerationSeconds": "soon"}]},
        ["spec.serving.tolerations[0].tolerationSeconds", "integer"],
    ),
    (
        "toleration-effect",
        {"tolerations": [{"key": "spot", "effect": "NoRun"}]},
        ["spec.serving.tolerations[0].effect", "Unsupported value"],
    ),
    (
        "toleration-typo",
        {"tolerations": [{"key": "spot", "efect": "NoExecute"}]},
        ['unknown field "spec.serving.tolerations[0].efect"'],
    ),
    ("tolerations-not-a-list", {"tolerations": {"key": "spot"}}, ["spec.serving.tolerations"]),
    (
        "affinity-operator-missing",
        {"affinity": required_node({"key": "zone", "values": ["a"]})},
        [
            "spec.serving.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].operator: Required value"
        ],
    ),
    (
        "spread-max-skew-missing",
        {
            "topologySpreadConstraints": [
                {"topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
            ]
        },
        ["spec.serving.topologySpreadConstraints[0].maxSkew: Required value"],
    ),
    (
        "spread-when-unsatisfiable",
        {
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Sometimes"}
            ]
        },
        ["spec.serving.topologySpreadConstraints[0].whenUnsatisfiable", "Unsupported value"],
    ),
    (
        "pull-secret-twice",
        {"imagePullSecrets": [{"name": "registry"}, {"name": "registry"}]},
        ["spec.serving.imagePullSecrets[1]", "Duplicate value"],
    ),
    (
        "service-account-name",
        {"serviceAccountName": "Model_Reader"},
        ["spec.serving.serviceAccountName"],
    ),
    (
        "priority-class-name",
        {"priorityClassName": "high priority"},
        ["spec.serving.priorityClassName"],
    ),
    (
        "node-selector-value",
        {"nodeSelector": {"type": "not a label value"}},
        ["spec.serving.nodeSelector.type"],
    ),
    (
        "pod-label-instance",
        {"podLabels": {"app.kubernetes.io/instance": "someone-else"}},
        ["spec.serving.podLabels", "podLabels may not set app.kubernetes.io/instance"],
    ),
    (
        "pod-label-name",
        {"podLabels": {"app.kubernetes.io/name": "x"}},
        ["spec.serving.podLabels", "podLabels may not set app.kubernetes.io/name"],
    ),
    (
        "pod-label-managed-by",
        {"podLabels": {"app.kubernetes.io/managed-by": "helm"}},
        ["spec.serving.podLabels", "podLabels may not set app.kubernetes.io/managed-by"],
    ),
    (
        "pod-label-model-version",
        {"podLabels": {"aliasop.io/model-version": "9"}},
        ["spec.serving.podLabels", "podLabels may not set keys under aliasop.io/"],
    ),
    (
        "pod-label-key",
        {"podLabels": {"-team": "ml"}},
        ["spec.serving.podLabels", "keys must be qualified names"],
    ),
    (
        "pod-label-value",
        {"podLabels": {"team": "machine learning"}},
        ["spec.serving.podLabels.team"],
    ),
    (
        "pod-annotation-aliasop",
        {"podAnnotations": {"aliasop.io/model-uri": "models:/other/1"}},
        ["spec.serving.podAnnotations", "podAnnotations may not set keys under aliasop.io/"],
    ),
    (
        "disruption-budget-both",
        {"disruptionBudget": {"minAvailable": 1, "maxUnavailable": "25%"}},
        ["spec.serving.disruptionBudget", "set exactly one of minAvailable and maxUnavailable"],
    ),
    (
        "disruption-budget-percentage",
        {"disruptionBudget": {"maxUnavailable": "a quarter"}},
        ["spec.serving.disruptionBudget.maxUnavailable"],
    ),
    (
        "storage-size-limit",
        {"storage": {"sizeLimit": "two gigabytes"}},
        ["spec.serving.storage.sizeLimit"],
    ),
    ("drain-seconds", {"drainSeconds": -1}, ["spec.serving.drainSeconds"]),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("case", "serving", "expected"), REFUSED_AT_APPLY, ids=[c[0] for c in REFUSED_AT_APPLY]
)
def test_invalid_pod_settings_are_refused_at_apply(
    installed: Cluster, namespace: str, case: str, serving: dict[str, Any], expected: list[str]
) -> None:
    result = apply(installed, namespace, case, serving)
    assert result.returncode != 0, result.stdout
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.timeout(60)
def test_pod_labels_beside_the_reserved_ones_are_accepted(
    installed: Cluster, namespace: str
) -> None:
    """The rules refuse aliasop's keys only: look-alikes and other app.kubernetes.io/ keys
    pass."""
    serving = {
        "podLabels": {
            "app.kubernetes.io/version": "2",
            "app.kubernetes.io/component": "model",
            "example.com/aliasop.io": "x",
            "team.aliasop.io/owner": "ml",
        },
        "podAnnotations": {"aliasop.io.example.com/note": "fine"},
    }
    result = apply(installed, namespace, "lookalikes", serving)
    assert result.returncode == 0, result.stderr


def test_a_disruption_budget_the_download_volume_and_the_drain_reach_the_cluster(
    two_versions: Versions, serving_v1: Callable[..., View], k8s: client.ApiClient
) -> None:
    bikes_view = serving_v1(
        serving={
            "disruptionBudget": {"maxUnavailable": 1},
            "storage": {"sizeLimit": "512Mi"},
            "drainSeconds": 3,
        }
    )
    policy = client.PolicyV1Api(k8s)
    budget = wait_for(
        lambda: (
            policy.read_namespaced_pod_disruption_budget_status(
                "bikes", bikes_view.namespace
            ).status.expected_pods
            == 2
        ),
        timeout=30,
        message="the PodDisruptionBudget counting both serving pods",
    )
    assert budget
    pod = bikes_view.pod()
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["emptyDir"] == {"sizeLimit": "512Mi"}
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 3}}}
    assert pod["terminationGracePeriodSeconds"] == 3 + IN_FLIGHT_SECONDS

    bikes_view.patch_spec({"serving": {"disruptionBudget": None}})

    def gone() -> bool:
        try:
            policy.read_namespaced_pod_disruption_budget("bikes", bikes_view.namespace)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout=30, message="the PodDisruptionBudget deleted with the spec's")
