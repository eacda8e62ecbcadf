"""Reads of a ModelDeployment and its children, for the integration tests, and a recorder of
their every change."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import urllib3
from kubernetes import client, watch
from prometheus_client.parser import text_string_to_metric_families

from aliasop.builders import VERSION_LABEL
from aliasop_dev import bikes, local

from support import wait_for

# Where manifests/ installs the operator (its ServiceAccount, and the Lease).
OPERATOR_NAMESPACE = "aliasop-system"
# The operator under test and the MLflow webhooks the tests create share this secret.
WEBHOOK_SECRET = "webhook-secret-for-the-tests"
# The operator's MLflow user on the basic-auth server (test_registry_auth.py).
READER, READER_PASSWORD = "aliasop-reader", "reader-password-for-the-tests"

# Versions 1 and 2 of a fresh model (the `two_versions` fixture).
Versions = tuple[bikes.RegisteredVersion, bikes.RegisteredVersion]


class View:
    """Reads of one ModelDeployment and its children."""

    def __init__(self, k8s: client.ApiClient, namespace: str, name: str) -> None:
        self.custom = client.CustomObjectsApi(k8s)
        self.apps = client.AppsV1Api(k8s)
        self.core = client.CoreV1Api(k8s)
        self.namespace, self.name = namespace, name

    def mdep(self) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "aliasop.io", "v1alpha1", self.namespace, "modeldeployments", self.name
        )
        return body

    def status(self) -> dict[str, Any]:
        return self.mdep().get("status") or {}

    def patch_spec(self, spec: dict[str, Any]) -> None:
        """Merge `spec` into the ModelDeployment's spec (None removes a field)."""
        self.custom.patch_namespaced_custom_object(
            "aliasop.io", "v1alpha1", self.namespace, "modeldeployments", self.name, {"spec": spec}
        )

    def deployment(self) -> client.V1Deployment | None:
        try:
            return self.apps.read_namespaced_deployment(self.name, self.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def template_version(self) -> str | None:
        deployment = self.deployment()
        return (
            deployment.spec.template.metadata.labels["aliasop.io/model-version"]
            if deployment
            else None
        )

    def replica_sets(self) -> list[client.V1ReplicaSet]:
        return self.apps.list_namespaced_replica_set(
            self.namespace, label_selector=f"app.kubernetes.io/instance={self.name}"
        ).items

    def pods(self) -> list[client.V1Pod]:
        pods: list[client.V1Pod] = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/instance={self.name}"
        ).items
        return pods

    def ready_pods(self) -> list[client.V1Pod]:
        """The pods that are Ready and not being deleted."""
        return [p for p in self.pods() if is_ready(p) and p.metadata.deletion_timestamp is None]

    def pods_by_version(self) -> dict[str, int]:
        """Ready pods (not being deleted) by version."""
        counts: dict[str, int] = {}
        for pod in self.ready_pods():
            version = pod.metadata.labels["aliasop.io/model-version"]
            counts[version] = counts.get(version, 0) + 1
        return counts

    def wait_serving(self, version: str, timeout: float = 90) -> dict[str, Any]:
        def serving() -> dict[str, Any] | None:
            status = self.status()
            done = status.get("phase") == "Ready" and status.get("servingVersion") == version
            return status if done else None

        return wait_for(serving, timeout, message=f"{self.name} serving version {version}")

    def events(self) -> list[str]:
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={self.name}"
        ).items
        return [e.reason for e in events]

    def pod(self) -> dict[str, Any]:
        """The pod template's spec of the Deployment, as the API server returns it."""
        deployment = self.deployment()
        assert deployment is not None
        api = client.ApiClient()
        spec: dict[str, Any] = api.sanitize_for_serialization(deployment.spec.template.spec)
        return spec

    def container(self) -> dict[str, Any]:
        """The serving container of the Deployment, as the API server returns it."""
        container: dict[str, Any] = self.pod()["containers"][0]
        return container


def endpoint(operator: local.LocalProcess, path: str) -> str:
    """A URL of the operator's HTTP port (/metrics, /webhooks/mlflow)."""
    return f"http://127.0.0.1:{operator.env['ALIASOP_HTTP_PORT']}{path}"


def deliveries(operator: local.LocalProcess) -> dict[str, float]:
    """MLflow webhook deliveries the operator counted, by result."""
    return counts_by(operator, "aliasop_webhook_deliveries_total", "result")


def counts_by(operator: local.LocalProcess, metric: str, label: str) -> dict[str, float]:
    """A counter of the operator's /metrics, summed per value of one of its labels."""
    text = httpx.get(f"http://127.0.0.1:{operator.env['ALIASOP_HTTP_PORT']}/metrics").text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric:
                value = sample.labels.get(label, "")
                counts[value] = counts.get(value, 0.0) + sample.value
    return counts


KWOK = ("kwok.x-k8s.io", "v1alpha1", "stages")

# What kwok writes into a matching pod: started, its container running, but never Ready, like a
# server that never answers its readiness probe. Being Running, the pod no longer matches the
# default pod-ready stage (which takes Pending pods); pod-delete still removes it when deleted.
NOT_READY_STATUS = """\
{{ $now := Now }}
phase: Running
startTime: {{ $now | Quote }}
conditions:
- {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
- type: ContainersReady
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: false
  started: true
  restartCount: 0
  state: {running: {startedAt: {{ $now | Quote }}}}
{{ end }}
"""


class NeverReady:
    """A kwok Stage that keeps one version's pods in one namespace from ever turning Ready."""

    def __init__(self, k8s: client.ApiClient, namespace: str) -> None:
        self.api = client.CustomObjectsApi(k8s)
        self.namespace = namespace
        self.name = f"never-ready-{namespace}"  # Stages are cluster-scoped

    def start(self, version: str) -> None:
        stage = {
            "apiVersion": f"{KWOK[0]}/{KWOK[1]}",
            "kind": "Stage",
            "metadata": {"name": self.name},
            "spec": {
                "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                "selector": {
                    "matchLabels": {VERSION_LABEL: version},
                    "matchExpressions": [
                        {
                            "key": ".metadata.namespace",
                            "operator": "In",
                            "values": [self.namespace],
                        },
                        {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                        {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                    ],
                },
                # The default pod-ready stage (weight 0) matches these pods too; kwok picks
                # among the matching stages with a weight, so this one wins every time.
                "weight": 1,
                "next": {"statusTemplate": NOT_READY_STATUS},
            },
        }
        try:
            self.api.create_cluster_custom_object(*KWOK, stage)
        except client.ApiException as exc:
            if exc.status == 404:
                pytest.fail("no kwok Stage CRD: an old cluster? Run `make cluster-up`.")
            raise

    def stop(self) -> None:
        try:
            self.api.delete_cluster_custom_object(*KWOK, self.name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


def predict_with(
    pod: dict[str, Any],
    example: pd.DataFrame,
    workdir: Path,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    cwd: Path | None = None,
) -> list[float]:
    """Run `pod` as rendered (the download, then the server), wait on the server's readiness
    probe, post the input example. `secrets`: the data of the Secrets its envFrom names."""
    container = pod["containers"][0]
    probe = container["readinessProbe"]["httpGet"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == probe["port"])
    server = local.serving_pod(pod, workdir, secrets=secrets, cwd=cwd).start()
    try:
        server.wait_ready(f"http://127.0.0.1:{port}{probe['path']}", timeout=120)
        response = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_split": json.loads(example.to_json(orient="split", index=False))},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        predictions: list[float] = response.json()["predictions"]
        return predictions
    finally:
        server.stop()


def is_ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


Handler = Callable[[list[tuple[str, Any]]], None]


def resource_version(obj: Any) -> str:
    """The resourceVersion of a typed object or list, or of a custom one (a dict)."""
    version: str = (
        obj["metadata"]["resourceVersion"]
        if isinstance(obj, dict)
        else obj.metadata.resource_version
    )
    return version


class Follower:
    """Lists, then watches from the list's resourceVersion (resuming each watch where the last
    one ended), in a thread: `handle` sees every change, each exactly once and in order, the
    listed objects in one call as ADDED, under `lock`. An error ends it; check() raises it."""

    def __init__(
        self,
        list_: Callable[..., Any],
        handle: Handler,
        *args: Any,
        lock: threading.Lock | None = None,
        **kw: Any,
    ) -> None:
        """Follow what `list_(*args, **kw)` lists (typed objects, or a custom list's dicts)."""
        self.list_, self.handle, self.args, self.kw = list_, handle, args, kw
        self.lock = lock or threading.Lock()
        self.errors: list[BaseException] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> Follower:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def _follow(self) -> None:
        try:
            listed = self.list_(*self.args, **self.kw)
            items = listed["items"] if isinstance(listed, dict) else listed.items
            with self.lock:
                self.handle([("ADDED", item) for item in items])  # one moment, one call
            version = resource_version(listed)
            while not self._stopped.is_set():
                stream = watch.Watch().stream(
                    self.list_, *self.args, resource_version=version, timeout_seconds=2, **self.kw
                )
                try:
                    for event in stream:
                        with self.lock:
                            self.handle([(event["type"], event["object"])])
                        version = resource_version(event["object"])
                except urllib3.exceptions.ProtocolError:
                    # The connection dropped mid-watch (a busy API server): the next watch
                    # resumes from the last change seen, so none is missed.
                    continue
        except BaseException as exc:  # reported by check(), in the test's thread
            self.errors.append(exc)


class Recorder:
    """Follows the pods and the Deployment of one ModelDeployment through watches, so that
    no state in between two polls goes unseen: the fewest Ready pods of one version, and of
    all, at any moment, every pod of each version, and every reason of the Deployment's
    Progressing condition."""

    def __init__(self, view: View, steady_version: str) -> None:
        self.view, self.steady_version = view, steady_version
        self.pods: dict[str, client.V1Pod] = {}
        self.uids_by_version: dict[str, set[str]] = {}
        self.ever_ready: set[str] = set()  # versions any pod of which was Ready
        self.fewest_steady_ready: int | None = None
        self.fewest_ready: int | None = None  # of any version
        self.progressing_reasons: list[str] = []
        self._lock = threading.Lock()
        selector = f"app.kubernetes.io/instance={view.name}"
        self._followers = [
            Follower(
                view.core.list_namespaced_pod,
                self._on_pods,
                lock=self._lock,
                namespace=view.namespace,
                label_selector=selector,
            ),
            Follower(
                view.apps.list_namespaced_deployment,
                self._on_deployments,
                lock=self._lock,
                namespace=view.namespace,
                field_selector=f"metadata.name={view.name}",
            ),
        ]

    def __enter__(self) -> Recorder:
        for follower in self._followers:
            follower.start()
        wait_for(lambda: self.fewest_steady_ready is not None, 10, message="the first pods")
        return self

    def __exit__(self, *_: object) -> None:
        for follower in self._followers:
            follower.stop()

    def _on_pods(self, events: list[tuple[str, client.V1Pod]]) -> None:
        for kind, pod in events:
            uid, version = pod.metadata.uid, pod.metadata.labels[VERSION_LABEL]
            self.uids_by_version.setdefault(version, set()).add(uid)
            if kind == "DELETED":
                self.pods.pop(uid, None)
            else:
                self.pods[uid] = pod
                if is_ready(pod):
                    self.ever_ready.add(version)
        steady = sum(
            1
            for p in self.pods.values()
            if p.metadata.labels[VERSION_LABEL] == self.steady_version
            and p.metadata.deletion_timestamp is None
            and is_ready(p)
        )
        if self.fewest_steady_ready is None or steady < self.fewest_steady_ready:
            self.fewest_steady_ready = steady
        ready = sum(
            1 for p in self.pods.values() if p.metadata.deletion_timestamp is None and is_ready(p)
        )
        if self.fewest_ready is None or ready < self.fewest_ready:
            self.fewest_ready = ready

    def _on_deployments(self, events: list[tuple[str, client.V1Deployment]]) -> None:
        for _, deployment in events:
            for condition in deployment.status.conditions or []:
                if condition.type == "Progressing" and (
                    self.progressing_reasons[-1:] != [condition.reason]
                ):
                    self.progressing_reasons.append(condition.reason)

    def versions(self) -> set[str]:
        """The versions of the pods that exist now."""
        with self._lock:
            return {p.metadata.labels[VERSION_LABEL] for p in self.pods.values()}

    def check(self) -> None:
        for follower in self._followers:
            follower.check()
