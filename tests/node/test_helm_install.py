"""`helm install` of charts/aliasop onto the test cluster with the images `make images` built:
the operator runs as pods on the real node, logs in with the chart's ServiceAccount through the
`kubernetes` Service, and makes a ModelDeployment serve there with the chart's serving image,
pinned to the alias's version, then rolls it forward when the alias moves.

The values change only what this cluster needs: the images' names in the node's containerd,
the node's placement, the MLflow server pods reach, a shard of its own (the integration
session's operator follows the others), and an /etc/hosts entry for kubernetes.default.svc,
which kopf's in-cluster login calls (the test cluster has no DNS).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from aliasop.builders import VERSION_LABEL
from aliasop.sharding import lease_name
from aliasop_dev import bikes, chart

from realnode import NodeMlflow, RealNode, condition, on_real_node, predict
from support import REPO, SHARD_LABEL, TEST_NAMESPACE_PREFIX, Cluster, wait_for

# func_only: the session's fixtures (the images' import, MLflow) are timed by their own waits.
pytestmark = pytest.mark.timeout(120, func_only=True)

CHART = REPO / "charts" / "aliasop"
SHARD = "helm-node"
SELECTOR = f"{SHARD_LABEL}={SHARD}"
NAME = "bikes"
PORT = 8080
GROUP = ("aliasop.io", "v1alpha1")


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    selector: str  # of the operator's pods

    @property
    def deployment(self) -> str:
        return f"{self.name}-aliasop"


def restricted_namespace(core: client.CoreV1Api, role: str) -> str:
    """A fresh namespace enforcing the `restricted` Pod Security Standard."""
    name = f"{TEST_NAMESPACE_PREFIX}helm-node-{role}-{uuid.uuid4().hex[:6]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    return name


def helm_runner(cluster: Cluster, home: Path) -> Callable[..., str]:
    """The helm that tests/tools/build.sh builds, with its state under `home`, against the test
    cluster; returns its output."""
    binary = chart.default_helm()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make tools-build`")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": cluster.kubeconfig,
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=120, env=env
        )
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    return run


def available(apps: client.AppsV1Api, name: str, namespace: str) -> bool:
    """Every replica of Deployment `name` is of its latest template and available."""
    deployment = apps.read_namespaced_deployment(name, namespace)
    status = deployment.status
    wanted = deployment.spec.replicas
    return (
        status.observed_generation == deployment.metadata.generation
        and status.updated_replicas == wanted
        and status.available_replicas == wanted
    )


def show_pods(cluster: Cluster, namespace: str, selector: str) -> None:
    """The pods and the end of their logs, for a failure's report."""
    print(cluster.kubectl("get", "pods", "-o", "wide", "-n", namespace, check=False).stdout)
    logs = cluster.kubectl(
        "logs",
        "-n",
        namespace,
        "-l",
        selector,
        "--all-containers",
        "--prefix",
        "--tail=40",
        check=False,
    )
    print(f"--- logs ({selector}) ---\n{logs.stdout}{logs.stderr}")


@pytest.fixture(scope="module")
def release(
    cluster: Cluster,
    k8s: client.ApiClient,
    real_node: RealNode,
    operator_image: str,
    serving_image: str,
    node_mlflow: NodeMlflow,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    """The chart installed into a fresh namespace, its operator pods running on the real node."""
    core = client.CoreV1Api(k8s)
    workdir = tmp_path_factory.mktemp("helm-node")
    helm = helm_runner(cluster, workdir)
    namespace = restricted_namespace(core, "ops")
    name = f"t-{uuid.uuid4().hex[:6]}"
    release = Release(name, namespace, f"app.kubernetes.io/instance={name}")
    placement = on_real_node({})
    api_service = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    values = {
        # As imported into the node's containerd; the tags are the chart's default, its
        # appVersion, which is the version `make images` tags them with.
        "image": {"repository": operator_image.rpartition(":")[0], "pullPolicy": "Never"},
        "servingImage": {"repository": serving_image.rpartition(":")[0]},
        "trackingUri": node_mlflow.uri,
        "watchLabelSelector": SELECTOR,
        "nodeSelector": placement["nodeSelector"],
        "tolerations": placement["tolerations"],
        "hostAliases": [{"ip": api_service, "hostnames": ["kubernetes.default.svc"]}],
    }
    values_file = workdir / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    try:
        helm("install", release.name, str(CHART), "--namespace", namespace, "-f", str(values_file))
        try:
            wait_for(
                lambda: available(client.AppsV1Api(k8s), release.deployment, namespace),
                timeout=120,
                interval=1,
                message=f"Deployment {release.deployment} available",
            )
            yield release
        finally:
            show_pods(cluster, namespace, release.selector)
            helm("uninstall", release.name, "--namespace", namespace)
    finally:
        core.delete_namespace(namespace)


def test_operator_pods_run_on_the_real_node(
    release: Release, k8s: client.ApiClient, real_node: RealNode, operator_image: str
) -> None:
    """Both replicas run the operator image on the real node, Ready by their probes, and one
    of them leads on the Lease the chart names: it got there with its ServiceAccount's token,
    through the `kubernetes` Service."""
    pods = (
        client.CoreV1Api(k8s)
        .list_namespaced_pod(release.namespace, label_selector=release.selector)
        .items
    )
    assert len(pods) == 2, [p.metadata.name for p in pods]
    for pod in pods:
        assert pod.spec.node_name == real_node.name
        assert pod.spec.service_account_name == release.deployment
        (container,) = pod.status.container_statuses
        assert container.image == operator_image
        assert container.container_id.startswith("containerd://")
        assert condition(pod, "Ready")

    def leader() -> str | None:
        lease = client.CoordinationV1Api(k8s).read_namespaced_lease(
            lease_name(SELECTOR), release.namespace
        )
        holder: str | None = lease.spec.holder_identity
        return holder

    holder = wait_for(leader, timeout=30, message="a leader")
    assert holder in {p.metadata.name for p in pods}


@pytest.mark.timeout(540, func_only=True)
def test_helm_installed_operator_rolls_a_model_on_the_real_node(
    release: Release,
    k8s: client.ApiClient,
    real_node: RealNode,
    serving_image: str,
    node_mlflow: NodeMlflow,
    cluster: Cluster,
) -> None:
    """A ModelDeployment that names no image: the operator renders the chart's serving image,
    pinned to the alias's version; its pod on the real node downloads that version from MLflow
    and answers through the Service. The alias moves: the operator rolls it forward."""
    uri = node_mlflow.uri
    model = f"bikes-{uuid.uuid4().hex[:8]}"
    v1 = bikes.train_and_register(uri, model, kind="linear")
    v2 = bikes.train_and_register(uri, model, kind="hourly")
    assert v1.predictions != pytest.approx(v2.predictions)
    bikes.set_alias(uri, model, "champion", v1.version)

    core = client.CoreV1Api(k8s)
    custom = client.CustomObjectsApi(k8s)
    apps = client.AppsV1Api(k8s)
    namespace = restricted_namespace(core, "ml")
    placement = on_real_node({})
    custom.create_namespaced_custom_object(
        *GROUP,
        namespace,
        "modeldeployments",
        {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": NAME, "labels": {SHARD_LABEL: SHARD}},
            "spec": {
                "model": f"models:/{model}@champion",
                "replicas": 1,
                "pollIntervalSeconds": 5,
                "serving": {
                    "port": PORT,
                    "nodeSelector": placement["nodeSelector"],
                    "tolerations": placement["tolerations"],
                },
            },
        },
    )

    def status() -> dict[str, Any]:
        body = custom.get_namespaced_custom_object(*GROUP, namespace, "modeldeployments", NAME)
        found: dict[str, Any] = body.get("status") or {}
        return found

    def serving(version: str) -> bool:
        current = status()
        return current.get("phase") == "Ready" and current.get("servingVersion") == version

    def answer(url: str, version: bikes.RegisteredVersion) -> list[float] | None:
        """The predictions from `url` once they are `version`'s (kube-proxy's rules for a new
        endpoint come at its next sync)."""
        try:
            predictions = predict(url, version.input_example)
        except OSError:
            return None
        return predictions if predictions == pytest.approx(version.predictions) else None

    try:
        wait_for(lambda: serving(v1.version), timeout=240, interval=1, message="version 1 serving")
        template = apps.read_namespaced_deployment(NAME, namespace).spec.template
        assert (
            template.metadata.annotations["aliasop.io/model-uri"] == f"models:/{model}/{v1.version}"
        )
        assert template.metadata.labels[VERSION_LABEL] == v1.version
        assert template.spec.containers[0].image == serving_image
        (pod,) = core.list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/instance={NAME}"
        ).items
        assert pod.spec.node_name == real_node.name
        cluster_ip = core.read_namespaced_service(NAME, namespace).spec.cluster_ip
        url = f"http://{cluster_ip}:{PORT}/invocations"
        wait_for(lambda: answer(url, v1), timeout=30, message="version 1's predictions")

        bikes.set_alias(uri, model, "champion", v2.version)
        wait_for(lambda: serving(v2.version), timeout=240, interval=1, message="version 2 serving")
        wait_for(lambda: answer(url, v2), timeout=30, message="version 2's predictions")
        history = [(h["version"], h.get("reason"), h.get("outcome")) for h in status()["history"]]
        assert (v2.version, "AliasMoved", "Succeeded") in history, history
    finally:
        show_pods(cluster, namespace, f"app.kubernetes.io/instance={NAME}")
        core.delete_namespace(namespace)


def test_helm_test_finds_the_operator_answering(
    release: Release, cluster: Cluster, tmp_path: Path
) -> None:
    """`helm test`: the chart's test pod, on the real node beside the operator, reaches its
    health endpoint and its metrics through the Service (no DNS: the Service's env)."""
    helm = helm_runner(cluster, tmp_path)
    try:
        out = helm("test", release.name, "--namespace", release.namespace, "--timeout", "3m")
    except AssertionError:
        test_pod = f"{release.deployment}-test-answers"
        print(cluster.kubectl("logs", "-n", release.namespace, test_pod, check=False).stdout)
        raise
    assert f"TEST SUITE:     {release.deployment}-test-answers" in out, out
    assert "Phase:          Succeeded" in out, out
