"""Integration fixtures: a real MLflow server, real registered models, the operator running
with the ServiceAccount and RBAC from manifests/ against the test cluster."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from mlflow import MlflowClient

from aliasop_dev import local

from metric_sources import PROMETHEUS_BINARY, TestServer
from resources import (
    OPERATOR_NAMESPACE,
    READER,
    READER_PASSWORD,
    WEBHOOK_SECRET,
    NeverReady,
    Versions,
    View,
    endpoint,
)
from support import WORKER_LABEL, Cluster, TcpProxy, worker_label_value, worker_labels


@pytest.fixture(scope="session")
def operator_kubeconfig(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kubeconfig holding the operator ServiceAccount's token: the tests prove its RBAC."""
    return str(
        local.service_account_kubeconfig(
            [installed.kubectl_binary, "--kubeconfig", installed.kubeconfig],
            OPERATOR_NAMESPACE,
            "aliasop",
            tmp_path_factory.mktemp("operator") / "kubeconfig",
        )
    )


@pytest.fixture(scope="session")
def auth_mlflow_uri() -> str:
    """Where the basic-auth MLflow server of test_registry_auth.py listens, once started:
    the operator is told beforehand that this server gets its credentials."""
    return f"http://127.0.0.1:{local.free_port()}"


@pytest.fixture(scope="session")
def operator(
    operator_kubeconfig: str,
    mlflow_uri: str,
    auth_mlflow_uri: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[local.LocalProcess]:
    port = local.free_port()
    log = tmp_path_factory.mktemp("operator-log") / "operator.log"
    process = local.operator(
        log,
        operator_kubeconfig,
        mlflow_uri,
        port,
        webhook_secret=WEBHOOK_SECRET,
    )
    # Tests see passes happen through lastResolvedTime, so have every pass write it.
    process.env["ALIASOP_STATUS_REFRESH_SECONDS"] = "0"
    # MLflow's own variables, as in the Secret aliasop-mlflow; for the basic-auth server only.
    process.env["MLFLOW_TRACKING_USERNAME"] = READER
    process.env["MLFLOW_TRACKING_PASSWORD"] = READER_PASSWORD
    process.env["ALIASOP_REGISTRY_CREDENTIAL_ORIGINS"] = auth_mlflow_uri
    # The registry is told what serves (test_registry_records.py); the plain MLflow server
    # takes writes without credentials.
    process.env["ALIASOP_REGISTRY_WRITE_BACK"] = "true"
    # Every test namespace may write to every model (test_tenancy_writes.py runs operators
    # of its own with narrower grants), and analysis may reach the tests' local servers.
    process.env["ALIASOP_REGISTRY_WRITE_GRANTS"] = '{"*": ["*"]}'
    process.env["ALIASOP_ANALYSIS_ALLOWED_HOSTS"] = '["127.0.0.1"]'
    # This pytest process's ModelDeployments only: workers run side by side, each with its
    # own operator (tests that run operators of their own label theirs with SHARD_LABEL).
    process.env["ALIASOP_WATCH_LABEL_SELECTOR"] = f"{WORKER_LABEL}={worker_label_value()}"
    process.start()
    try:
        process.wait_ready(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield process
    finally:
        process.stop()
        print(f"--- operator log tail ({log}) ---\n{process.tail(80)}")


@pytest.fixture
def mdeps(k8s: client.ApiClient, namespace: str) -> Callable[..., dict[str, Any]]:
    """Create a ModelDeployment in the test namespace, labelled for this process's `operator`:
    mdeps(name, **spec)."""
    api = client.CustomObjectsApi(k8s)

    def create(name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace, "labels": worker_labels()},
            "spec": spec,
        }
        created: dict[str, Any] = api.create_namespaced_custom_object(
            "aliasop.io", "v1alpha1", namespace, "modeldeployments", body
        )
        return created

    return create


@pytest.fixture
def restricted(k8s: client.ApiClient, namespace: str) -> str:
    """The test namespace with the `restricted` Pod Security Standard enforced, so the API
    server refuses serving pods that are not hardened."""
    client.CoreV1Api(k8s).patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    return namespace


@pytest.fixture
def view(k8s: client.ApiClient, restricted: str) -> Callable[[str], View]:
    return lambda name: View(k8s, restricted, name)


@pytest.fixture
def serving_v1(
    two_versions: Versions, model_name: str, mdeps: Callable[..., Any], view: Callable[[str], View]
) -> Callable[..., View]:
    """Create `bikes` following the model's @champion and wait until version 1 serves."""

    def create(**spec: Any) -> View:
        spec = {
            "model": f"models:/{model_name}@champion",
            "replicas": 2,
            "pollIntervalSeconds": 5,
            **spec,
        }
        mdeps("bikes", **spec)
        bikes_view = view("bikes")
        bikes_view.wait_serving(two_versions[0].version)
        return bikes_view

    return create


@pytest.fixture
def never_ready(k8s: client.ApiClient, restricted: str) -> Iterator[NeverReady]:
    stage = NeverReady(k8s, restricted)
    try:
        yield stage
    finally:
        stage.stop()


@pytest.fixture
def proxy(mlflow_uri: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of MLflow that a test can take down: a registry outage."""
    proxy = TcpProxy(int(mlflow_uri.rsplit(":", 1)[1])).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def mlflow_webhook(mlflow_uri: str, operator: local.LocalProcess) -> Iterator[None]:
    """An MLflow webhook to the operator for alias and version-tag changes."""
    client = MlflowClient(tracking_uri=mlflow_uri)
    webhook = client.create_webhook(
        name=f"aliasop-{uuid.uuid4().hex[:6]}",
        url=endpoint(operator, "/webhooks/mlflow"),
        events=[
            "model_version_alias.created",
            "model_version_alias.deleted",
            "model_version_tag.set",
            "model_version_tag.deleted",
        ],
        secret=WEBHOOK_SECRET,
    )
    yield
    client.delete_webhook(webhook.webhook_id)


@pytest.fixture(scope="module")
def server() -> Iterator[TestServer]:
    """The tests' HTTP server: Prometheus's scrape target, and the web provider's answers."""
    test_server = TestServer().start()
    try:
        yield test_server
    finally:
        test_server.stop()


@pytest.fixture(scope="module")
def prometheus(server: TestServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping the test server every second; its base URL."""
    if not PROMETHEUS_BINARY.exists():
        pytest.fail(f"{PROMETHEUS_BINARY} is missing: run tests/tools/build.sh")
    port = local.free_port()
    workdir: Path = tmp_path_factory.mktemp("prometheus")
    process = local.prometheus_server(
        PROMETHEUS_BINARY, workdir, port, [f"127.0.0.1:{server.port}"]
    ).start()
    try:
        process.wait_ready(f"http://127.0.0.1:{port}/-/ready", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()
