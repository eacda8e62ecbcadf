"""The operator image runs against the test cluster the way manifests/ runs it: the operator
Deployment's container as `kubectl kustomize manifests/` renders it (non-root, read-only root
filesystem, /tmp an emptyDir, no capabilities), logged in with its ServiceAccount's token
mounted where the kubelet mounts it, and it reconciles a ModelDeployment."""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from aliasop_dev import bikes, local

from podman import Container, Pod, ServiceAccount
from support import Cluster, TcpProxy, wait_for

# Includes building the images in the session fixture when they are not built yet.
pytestmark = pytest.mark.timeout(900)

OPERATOR_NAMESPACE = "aliasop-system"
# The integration tests' operator follows every ModelDeployment without this label; the one
# in the image follows only those with it.
SHARD_LABEL = "aliasop.io/shard"
SHARD = "containers"
# kopf's in-cluster login talks to https://kubernetes.default.svc, port 443, as in a pod.
API_SERVICE_HOST = "kubernetes.default.svc"


def operator_pod_spec(cluster: Cluster) -> dict[str, Any]:
    """The pod spec of the operator Deployment that `kubectl apply -k manifests/` applies."""
    rendered = cluster.kubectl("kustomize", str(Path(__file__).parents[2] / "manifests")).stdout
    for document in yaml.safe_load_all(rendered):
        if (
            document
            and document["kind"] == "Deployment"
            and document["metadata"]["name"] == ("aliasop")
        ):
            spec: dict[str, Any] = document["spec"]["template"]["spec"]
            return spec
    raise AssertionError("manifests/ has no Deployment aliasop")


def service_account_files(cluster: Cluster, directory: Path) -> Path:
    """token, ca.crt and namespace of ServiceAccount aliasop, as the kubelet projects them."""
    directory.mkdir(mode=0o755)
    token = cluster.kubectl(
        "-n", OPERATOR_NAMESPACE, "create", "token", "aliasop", "--duration=1h"
    ).stdout.strip()
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    for name, content in (("token", token.encode()), ("ca.crt", ca)):
        (directory / name).write_bytes(content)
    (directory / "namespace").write_text(OPERATOR_NAMESPACE)
    for path in directory.iterdir():
        path.chmod(0o644)  # readable by the container's user, 10001
    return directory


@pytest.fixture
def api_service(cluster: Cluster) -> Iterator[TcpProxy]:
    """The API server as the `kubernetes` Service shows it to pods: port 443 of an address of
    its own (a loopback address here, which the container resolves kubernetes.default.svc to)."""
    server = yaml.safe_load(Path(cluster.kubeconfig).read_text())["clusters"][0]["cluster"]
    api_port = int(server["server"].rsplit(":", 1)[1])
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    proxy = TcpProxy(api_port, host=address, port=443).start()
    yield proxy
    proxy.stop()


@dataclass(frozen=True)
class Operator:
    container: Container
    metrics_url: str

    def rollouts(self) -> dict[str, float]:
        """aliasop_rollouts_total by reason: what this operator, not another, has done."""
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(httpx.get(self.metrics_url).text):
            for sample in family.samples:
                if sample.name == "aliasop_rollouts_total":
                    counts[sample.labels["reason"]] = sample.value
        return counts


@pytest.fixture
def operator(
    images: tuple[str, str],
    installed: Cluster,
    mlflow_uri: str,
    api_service: TcpProxy,
    tmp_path: Path,
) -> Iterator[Operator]:
    operator_image, _ = images
    pod_spec = operator_pod_spec(installed)
    container = pod_spec["containers"][0]
    assert container["image"] == operator_image, "manifests/ pins another operator image"
    # What a test changes, as a kustomize patch would: MLflow's address, free ports for the
    # host network, and the shard this operator follows.
    health_port, http_port = local.free_port(), local.free_port()
    container["args"] = [
        *(a for a in container["args"] if not a.startswith("--liveness")),
        f"--liveness=http://127.0.0.1:{health_port}/healthz",
        f"--watch-label-selector={SHARD_LABEL}={SHARD}",
    ]
    changed = {"ALIASOP_TRACKING_URI": mlflow_uri, "ALIASOP_HTTP_PORT": str(http_port)}
    env = [e for e in container["env"] if e["name"] not in changed]
    container["env"] = [*({"name": k, "value": v} for k, v in changed.items()), *env]
    pod = Pod(
        pod_spec,
        tmp_path / "pod",
        service_account=ServiceAccount(
            service_account_files(installed, tmp_path / "serviceaccount"),
            api_service.host,
            api_service.port,
        ),
        extra_hosts={API_SERVICE_HOST: api_service.host},
        # The downward API's fields (leader election: the Lease's namespace, this replica's
        # name in it, the address standbys pass webhook deliveries on to).
        pod_fields={
            "metadata.namespace": OPERATOR_NAMESPACE,
            "metadata.name": f"aliasop-container-{uuid.uuid4().hex[:6]}",
            "status.podIP": "127.0.0.1",
        },
    )
    try:
        operator = pod.start().containers[container["name"]]
        operator.wait_ready(f"http://127.0.0.1:{health_port}/healthz", timeout=90)
        yield Operator(operator, f"http://127.0.0.1:{http_port}/metrics")
    finally:
        for started in pod.containers.values():
            print(f"--- operator container log tail ---\n{started.tail(80)}")
        pod.remove()


def test_operator_image_reconciles_with_its_service_account(
    operator: Operator,
    k8s: client.ApiClient,
    namespace: str,
    mlflow_uri: str,
    model_name: str,
    two_versions: tuple[bikes.RegisteredVersion, bikes.RegisteredVersion],
) -> None:
    v1, v2 = two_versions
    custom = client.CustomObjectsApi(k8s)
    apps = client.AppsV1Api(k8s)
    custom.create_namespaced_custom_object(
        "aliasop.io",
        "v1alpha1",
        namespace,
        "modeldeployments",
        {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "bikes", "labels": {SHARD_LABEL: SHARD}},
            "spec": {
                "model": f"models:/{model_name}@champion",
                "replicas": 1,
                "pollIntervalSeconds": 5,
            },
        },
    )

    def serving(version: str) -> dict[str, Any] | None:
        body = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object(
                "aliasop.io", "v1alpha1", namespace, "modeldeployments", "bikes"
            ),
        )
        status: dict[str, Any] = body.get("status") or {}
        done = status.get("phase") == "Ready" and status.get("servingVersion") == version
        return status if done else None

    def pinned_uri() -> str:
        metadata = apps.read_namespaced_deployment("bikes", namespace).spec.template.metadata
        assert metadata is not None
        annotations = metadata.annotations or {}
        return str(annotations["aliasop.io/model-uri"])

    wait_for(lambda: serving(v1.version), timeout=120, message=f"version {v1.version} serving")
    assert pinned_uri() == f"models:/{model_name}/{v1.version}"

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    wait_for(lambda: serving(v2.version), timeout=120, message=f"version {v2.version} serving")
    assert pinned_uri() == f"models:/{model_name}/{v2.version}"

    # This operator made both rollouts (no other one follows the shard), as the manifest runs
    # it, with no credentials but the ServiceAccount's: user 10001, nothing written outside /tmp.
    assert operator.rollouts().get("RolloutSucceeded", 0) >= 2
    assert operator.container.exec("id", "-u").stdout.strip() == "10001"
    assert operator.container.exec("touch", "/opt/aliasop/written").returncode != 0
    assert operator.container.exec("touch", "/tmp/written").returncode == 0
