"""End to end on the real node: the operator (a local process) rolls real serving pods, of the
serving image `make images` built, as a model's alias moves; each pod downloads its version in
its init container from a real MLflow server, and a client sends requests through the Service's
ClusterIP the whole time.

The tests share one ModelDeployment (starting a serving pod takes a while on two cores) and run
in order: its security settings on the first pod, a move from version 1 to 2 (the old pod
finishing a request in flight as it stops), and a version whose download fails, rolled back.
The operator follows only resources labelled `aliasop.io/shard=e2e`, which the integration
session's operator leaves alone.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from mlflow import MlflowClient

from aliasop.builders import (
    DOWNLOAD_CONTAINER,
    IN_FLIGHT_SECONDS,
    SERVING_CONTAINER,
    VERSION_LABEL,
)
from aliasop.models import PROMOTE_ANNOTATION
from aliasop_dev import bikes, local

from realnode import NodeMlflow, RealNode, on_real_node, predict
from support import SHARD_LABEL, Cluster, wait_for

# func_only: the session's fixtures (the image's import, MLflow, the operator, the first pod)
# are timed by their own waits.
pytestmark = pytest.mark.timeout(240, func_only=True)

SHARD = "e2e"
NAME = "bikes"
PORT = 8080
# A good version's pod starts within this even on a node busy with the other test workers
# (measured: 16 s alone, over 30 s beside three workers).
DEADLINE_SECONDS = 180
# The tests of a version that cannot serve set this deadline first, so that its rollout is
# given up well within a test.
FAILING_DEADLINE_SECONDS = 30
DRAIN_SECONDS = 5


@dataclass
class Model:
    """The registered model and its versions, the MLflow server's artifact directory."""

    tracking_uri: str
    artifacts: Path
    name: str
    versions: list[bikes.RegisteredVersion] = field(default_factory=list)

    def predictions(self, version: str) -> list[float]:
        return next(v.predictions for v in self.versions if v.version == version)


@dataclass
class Serving:
    k8s: client.ApiClient
    namespace: str
    model: Model
    url: str  # the Service's ClusterIP: /invocations

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.k8s)

    def set_deadline(self, seconds: int) -> None:
        client.CustomObjectsApi(self.k8s).patch_namespaced_custom_object(
            "aliasop.io",
            "v1alpha1",
            self.namespace,
            "modeldeployments",
            NAME,
            {"spec": {"rollout": {"progressDeadlineSeconds": seconds}}},
        )

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = client.CustomObjectsApi(self.k8s).get_namespaced_custom_object(
            "aliasop.io", "v1alpha1", self.namespace, "modeldeployments", NAME
        )
        return body.get("status") or {}

    def pods(self) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/instance={NAME}"
        ).items

    def only_version(self, version: str) -> bool:
        """Every pod left is `version`'s, Ready (the old ones are gone, not just terminating)."""
        pods = self.pods()
        return bool(pods) and all(
            p.metadata.labels[VERSION_LABEL] == version
            and p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            for p in pods
        )

    def serving(self, version: str, phases: tuple[str, ...] = ("Ready",)) -> bool:
        """`version` serves, alone, and the phase is one of `phases` (Degraded too after a
        rollback: the alias still names the version that failed)."""
        status = self.status()
        return (
            status.get("phase") in phases
            and status.get("servingVersion") == version
            and self.only_version(version)
        )

    def predict(self) -> list[float]:
        return predict(self.url, self.model.versions[0].input_example)


def which(model: Model, predictions: list[float]) -> str | None:
    """The version whose predictions these are, if any."""
    for v in model.versions:
        if predictions == pytest.approx(v.predictions):
            return v.version
    return None


class Client(threading.Thread):
    """Sends requests through the Service one after another, without pause, until stopped;
    records which version answered each, and every failure."""

    def __init__(self, serving: Serving) -> None:
        super().__init__(daemon=True)
        self.serving = serving
        self.answers: list[str | None] = []
        self.failures: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.answers.append(which(self.serving.model, self.serving.predict()))
            # Any error, not only OSError (HTTP errors, timeouts): a bad body (ValueError,
            # IncompleteRead) would otherwise end the thread unrecorded.
            except Exception as error:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {error!r}")

    def __enter__(self) -> Client:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.join(timeout=30)


@pytest.fixture(scope="module")
def model(node_mlflow: NodeMlflow) -> Model:
    """Versions 1 and 2 of a fresh model on the MLflow server the pods reach, which predict
    differently; @champion -> 1. Version 1 is a custom pyfunc model (with its own code) that
    answers as slowly as a request asks; version 2 a scikit-learn one."""
    uri = node_mlflow.uri
    m = Model(uri, node_mlflow.artifacts, f"bikes-{uuid.uuid4().hex[:8]}")
    m.versions.append(bikes.log_slow_model(uri, m.name))
    m.versions.append(bikes.train_and_register(uri, m.name, kind="hourly"))
    assert m.versions[0].predictions != pytest.approx(m.versions[1].predictions)
    bikes.set_alias(uri, m.name, "champion", m.versions[0].version)
    return m


@pytest.fixture(scope="module")
def operator(
    installed: Cluster, model: Model, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[local.LocalProcess]:
    """aliasop as a local process with the admin kubeconfig, following shard `e2e` only (the
    CRD installed by the session, as the other workers' tests use it)."""
    port = local.free_port()
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = local.operator(log, installed.kubeconfig, model.tracking_uri, port)
    process.env["ALIASOP_WATCH_LABEL_SELECTOR"] = f"{SHARD_LABEL}={SHARD}"
    process.start()
    try:
        process.wait_ready(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield process
    finally:
        process.stop()
        print(f"--- operator log tail ({log}) ---\n{process.tail(60)}")


@pytest.fixture(scope="module")
def serving(
    k8s: client.ApiClient, serving_image: str, model: Model, operator: local.LocalProcess
) -> Iterator[Serving]:
    """A namespace with ModelDeployment `bikes` on the real node following @champion, version 1
    serving and answering through the Service's ClusterIP."""
    core = client.CoreV1Api(k8s)
    namespace = f"t-e2e-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        {
            "metadata": {
                "name": namespace,
                # The serving pods pass the restricted Pod Security Standard.
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            }
        }
    )
    placement = on_real_node({})
    spec = {
        "model": f"models:/{model.name}@champion",
        "replicas": 1,
        "pollIntervalSeconds": 5,
        "serving": {
            "image": serving_image,
            "port": PORT,
            "drainSeconds": DRAIN_SECONDS,
            # A download the MLflow server answers with errors fails at once, not after
            # MLflow's retries with backoff (minutes).
            "env": [{"name": "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "value": "0"}],
            "nodeSelector": placement["nodeSelector"],
            "tolerations": placement["tolerations"],
        },
        "rollout": {"progressDeadlineSeconds": DEADLINE_SECONDS, "autoRollback": True},
    }
    client.CustomObjectsApi(k8s).create_namespaced_custom_object(
        "aliasop.io",
        "v1alpha1",
        namespace,
        "modeldeployments",
        {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": NAME, "labels": {SHARD_LABEL: SHARD}},
            "spec": spec,
        },
    )
    try:
        cluster_ip = wait_for(
            lambda: _cluster_ip(core, namespace), timeout=30, message="the Service"
        )
        s = Serving(k8s, namespace, model, f"http://{cluster_ip}:{PORT}/invocations")
        v1 = model.versions[0].version
        wait_for(lambda: s.serving(v1), timeout=180, interval=1, message=f"version {v1} serving")
        # kube-proxy's rules for the new endpoint come at its next sync.
        wait_for(lambda: _answers(s), timeout=30, message=f"an answer from {s.url}")
        yield s
    finally:
        core.delete_namespace(namespace)


def _cluster_ip(core: client.CoreV1Api, namespace: str) -> str | None:
    try:
        ip: str = core.read_namespaced_service(NAME, namespace).spec.cluster_ip
    except client.ApiException as error:
        if error.status != 404:
            raise
        return None
    return ip


def _answers(s: Serving) -> str | None:
    try:
        return which(s.model, s.predict())
    except OSError:
        return None


def _exec(cluster: Cluster, namespace: str, pod: str, script: str) -> str:
    return cluster.kubectl(
        "exec", "-n", namespace, pod, "-c", SERVING_CONTAINER, "--", "sh", "-c", script
    ).stdout


def test_serving_pod_runs_locked_down(
    serving: Serving, cluster: Cluster, real_node: RealNode, serving_image_id: str
) -> None:
    (pod,) = serving.pods()
    assert pod.spec.node_name == real_node.name
    (server,) = pod.status.container_statuses
    assert server.container_id.startswith("containerd://")
    # The image imported from podman's store runs: its ID, not just its name (which the kubelet
    # echoes back from the spec).
    assert server.image_id == serving_image_id
    (download,) = pod.status.init_container_statuses
    # The init container ran, and finished: it downloaded the version the pod serves.
    assert download.state.terminated.exit_code == 0
    name = pod.metadata.name
    ns = serving.namespace
    assert _exec(cluster, ns, name, "id -u; id -g").split() == ["10001", "10001"]
    # The root is read-only for the server; /tmp (an emptyDir) is not, and the model's files
    # are mounted read-only.
    tried = _exec(
        cluster,
        ns,
        name,
        "touch /written 2>&1; echo root=$?; touch /opt/written 2>&1; echo opt=$?; "
        "touch /tmp/written; echo tmp=$?; touch /var/lib/aliasop/model/written 2>&1; "
        "echo model=$?; ls /var/lib/aliasop/model",
    )
    assert "root=1" in tried and "opt=1" in tried and "model=1" in tried, tried
    assert "tmp=0" in tried, tried
    assert "Read-only file system" in tried, tried
    assert "MLmodel" in tried.split(), tried
    # The server process (PID 1 of the container): no capability, no privilege escalation.
    proc = dict(
        line.split(":", 1)
        for line in _exec(cluster, ns, name, "cat /proc/1/status").splitlines()
        if ":" in line
    )
    # PID 1 is uvicorn itself, so that SIGTERM reaches the server.
    cmdline = _exec(cluster, ns, name, "tr '\\0' ' ' < /proc/1/cmdline")
    assert "/uvicorn --host 0.0.0.0" in cmdline, cmdline
    assert int(proc["CapEff"].strip(), 16) == 0
    assert int(proc["CapPrm"].strip(), 16) == 0
    assert proc["NoNewPrivs"].strip() == "1"
    assert proc["Uid"].split()[:2] == ["10001", "10001"]
    assert serving.predict() == pytest.approx(serving.model.versions[0].predictions)


@dataclass
class Stopping:
    """What a watch of one pod saw as it stopped: when its deletion began (wall clock), its
    grace period, its server's last state, and when it was gone."""

    began: float | None = None
    grace_seconds: int | None = None
    server: client.V1ContainerState | None = None
    gone: float | None = None


class PodWatch(threading.Thread):
    """Follows one pod until it is gone (or stopped), recording its stop (`Stopping`)."""

    def __init__(self, core: client.CoreV1Api, namespace: str, name: str) -> None:
        super().__init__(daemon=True)
        self.core, self.namespace, self.name = core, namespace, name
        self.seen = Stopping()
        self.errors: list[BaseException] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        kw = {"field_selector": f"metadata.name={self.name}"}
        try:
            listed = self.core.list_namespaced_pod(self.namespace, **kw)
            for pod in listed.items:
                self._record(pod)
            version = listed.metadata.resource_version
            while not self.stopped.is_set() and self.seen.gone is None:
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    resource_version=version,
                    timeout_seconds=2,
                    **kw,
                )
                for event in stream:
                    self._record(event["object"])
                    if event["type"] == "DELETED":
                        self.seen.gone = time.time()
                        break
                    version = event["object"].metadata.resource_version
        except BaseException as error:  # reported in the test's thread
            self.errors.append(error)

    def _record(self, pod: client.V1Pod) -> None:
        meta = pod.metadata
        if meta.deletion_timestamp is not None and self.seen.began is None:
            # The API server sets deletionTimestamp to the end of the grace period.
            self.seen.grace_seconds = meta.deletion_grace_period_seconds
            self.seen.began = meta.deletion_timestamp.timestamp() - self.seen.grace_seconds
        for status in pod.status.container_statuses or []:
            if status.name == SERVING_CONTAINER:
                self.seen.server = status.state

    def __enter__(self) -> PodWatch:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.join(timeout=10)


# Longer than the drain: sent as the pod starts stopping, it is in flight at its SIGTERM.
SLOW_REQUEST_SECONDS = DRAIN_SECONDS + 4


def test_alias_move_drops_no_request(serving: Serving) -> None:
    """@champion moves from 1 to 2 while a client sends requests through the ClusterIP: every
    request is answered, by version 1 or 2, and once the rollout is done, by 2 only.

    The old pod, as it starts stopping, gets a request straight to its address that takes
    longer than its drain: it is answered though the pod got SIGTERM meanwhile, and the server
    then exits on that SIGTERM (exit code 0), the pod gone long before its grace period ends
    (the `mlflow` CLI as PID 1 ignored SIGTERM: SIGKILL at the end of the grace period)."""
    model = serving.model
    v1, v2 = (v.version for v in model.versions[:2])
    wait_for(lambda: serving.serving(v1), timeout=60, message=f"version {v1} serving")
    (old,) = serving.pods()
    old_url = f"http://{old.status.pod_ip}:{PORT}/invocations"
    slow: dict[str, Any] = {}

    def slow_request() -> None:
        slow["sent"] = time.time()
        delay = {"delay_seconds": SLOW_REQUEST_SECONDS}
        try:
            slow["answer"] = predict(old_url, model.versions[0].input_example, delay, timeout=60)
        except OSError as error:
            slow["error"] = repr(error)
        slow["answered"] = time.time()

    with (
        Client(serving) as requests,
        PodWatch(serving.core, serving.namespace, old.metadata.name) as stopping,
    ):
        wait_for(lambda: len(requests.answers) >= 20, timeout=30, message="20 answers")
        bikes.set_alias(model.tracking_uri, model.name, "champion", v2)
        wait_for(
            lambda: stopping.seen.began or stopping.errors,
            timeout=180,
            interval=0.1,
            message=f"version {v1}'s pod stopping",
        )
        in_flight = threading.Thread(target=slow_request, daemon=True)
        in_flight.start()
        wait_for(
            lambda: serving.serving(v2), timeout=180, interval=1, message=f"version {v2} serving"
        )
        during = len(requests.answers)
        # The last old pod is gone: from now on only version 2 can answer.
        wait_for(
            lambda: len(requests.answers) >= during + 50, timeout=60, message="50 more answers"
        )
        in_flight.join(timeout=60)
        assert not in_flight.is_alive(), "the slow request still waits for its answer"
        wait_for(lambda: stopping.seen.gone, timeout=30, message=f"version {v1}'s pod gone")
    assert stopping.errors == [], stopping.errors
    assert requests.failures == [], requests.failures
    counts = Counter(requests.answers)
    assert set(counts) == {v1, v2}, counts  # None: an answer from neither version
    # Once the old pod is gone, only version 2 answers.
    assert set(requests.answers[during:]) == {v2}, Counter(requests.answers[during:])
    # Version 2's pod downloaded version 2.
    (pod,) = serving.pods()
    assert pod.metadata.annotations["aliasop.io/model-uri"] == f"models:/{model.name}/{v2}"
    (download,) = pod.status.init_container_statuses
    assert download.state.terminated.exit_code == 0

    seen = stopping.seen
    assert seen.began is not None and seen.gone is not None, seen
    assert seen.grace_seconds == DRAIN_SECONDS + IN_FLIGHT_SECONDS, seen
    sigterm = seen.began + DRAIN_SECONDS  # the preStop sleep's end
    sent, answered = slow["sent"] - seen.began, slow["answered"] - seen.began
    print(
        f"the old pod, from its deletion: SIGTERM at ~{DRAIN_SECONDS}s, the slow request sent "
        f"at {sent:.1f}s and answered at {answered:.1f}s, the pod gone at "
        f"{seen.gone - seen.began:.1f}s (grace period {seen.grace_seconds}s)"
    )
    # The request was in flight at the SIGTERM (deletionTimestamp has whole seconds: 1 s of
    # margin each side), and answered in full by version 1.
    assert slow["sent"] < sigterm - 1 and slow["answered"] > sigterm + 1, slow
    assert "error" not in slow, slow
    assert slow["answer"] == pytest.approx(model.versions[0].predictions), slow
    # The server exited on the SIGTERM once the request was answered, not at a SIGKILL.
    assert seen.server is not None and seen.server.terminated is not None, seen
    assert seen.server.terminated.exit_code == 0, seen.server.terminated
    assert seen.gone < seen.began + seen.grace_seconds - 10, seen


def test_version_that_cannot_start_is_rolled_back(serving: Serving, cluster: Cluster) -> None:
    """A version whose files the MLflow server cannot serve: its pod's download fails in the
    init container (Init:Error, the reason in its log and in the pod's status), the rollout
    misses its deadline and is rolled back, and requests keep being answered by the version
    that served before."""
    model = serving.model
    good = model.versions[-1].version
    wait_for(
        lambda: serving.serving(good, ("Ready", "Degraded")),
        timeout=60,
        message=f"version {good} serving",
    )
    bad = bikes.train_and_register(model.tracking_uri, model.name, kind="linear", seed=11)
    # Break its files on the server: the model's weights a dangling link, so the server's
    # listing of the version's artifacts fails (HTTP 500).
    source = MlflowClient(model.tracking_uri).get_model_version(model.name, bad.version).source
    model_id = source.removeprefix("models:/")
    (files,) = (p.parent for p in model.artifacts.rglob("MLmodel") if model_id in str(p))
    broken = [f for f in files.iterdir() if f.name.startswith("model.")]
    assert broken, sorted(f.name for f in files.iterdir())
    for f in broken:
        f.unlink()
        f.symlink_to("/nonexistent")

    with Client(serving) as requests:
        wait_for(lambda: len(requests.answers) >= 20, timeout=30, message="20 answers")
        serving.set_deadline(FAILING_DEADLINE_SECONDS)
        bikes.set_alias(model.tracking_uri, model.name, "champion", bad.version)

        def failed_download() -> client.V1Pod | None:
            for pod in serving.pods():
                if pod.metadata.labels[VERSION_LABEL] != bad.version:
                    continue
                (status,) = pod.status.init_container_statuses or [None]
                terminated = status and (status.state.terminated or status.last_state.terminated)
                if terminated and terminated.exit_code != 0:
                    return pod
            return None

        pod = wait_for(failed_download, timeout=90, message=f"version {bad.version}'s download")
        name = pod.metadata.name
        shown = cluster.kubectl("get", "pod", "-n", serving.namespace, name).stdout
        assert "Init:Error" in shown or "Init:CrashLoopBackOff" in shown, shown
        log = cluster.kubectl(
            "logs", "-n", serving.namespace, name, "-c", DOWNLOAD_CONTAINER, check=False
        ).stdout
        if "Traceback" not in log:  # restarted meanwhile: the failed run's log
            log = cluster.kubectl(
                "logs", "-n", serving.namespace, name, "-c", DOWNLOAD_CONTAINER, "--previous"
            ).stdout
        assert "mlflow-artifacts" in log and "500 error" in log, log
        # The log's tail is the termination message: the reason is in the pod's status, and
        # `kubectl describe` shows it.
        (status,) = pod.status.init_container_statuses
        message = (status.state.terminated or status.last_state.terminated).message or ""
        assert "mlflow-artifacts" in message and "500 error" in message, message
        described = cluster.kubectl("describe", "pod", "-n", serving.namespace, name).stdout
        assert "too many 500 error responses" in described, described
        assert pod.status.container_statuses[0].state.waiting is not None  # never started

        def rolled_back() -> bool:
            status = serving.status()
            return status.get("failedVersion") == bad.version and serving.only_version(good)

        wait_for(
            rolled_back, timeout=FAILING_DEADLINE_SECONDS + 90, interval=1, message="the rollback"
        )
        during = len(requests.answers)
        wait_for(lambda: len(requests.answers) >= during + 20, timeout=30, message="answers")
    assert requests.failures == [], requests.failures
    # Every answer came from the version that served before.
    assert set(requests.answers) == {good}, Counter(requests.answers)

    def rollback_recorded() -> dict[str, Any] | None:
        status = serving.status()
        history = status.get("history") or []
        outcomes = {(h["version"], h.get("reason"), h.get("outcome")) for h in history}
        done = (good, "Rollback", "Succeeded") in outcomes
        return status if done else None

    status = wait_for(rollback_recorded, timeout=30, message="the rollback in the history")
    outcomes = {(h["version"], h.get("reason"), h.get("outcome")) for h in status["history"]}
    assert (bad.version, "AliasMoved", "Failed") in outcomes, status["history"]
    assert status["servingVersion"] == good and status["lastGoodVersion"] == good, status
    # Degraded while @champion names the failed version, which is not tried again.
    assert status["phase"] == "Degraded", status
    message = status["message"]
    assert f"version {bad.version} failed to roll out" in message or (
        f"version {bad.version} did not become available" in message
    ), message


# A package the serving image lacks: the model below needs it to load.
MISSING_PACKAGE = "aliasop_e2e_extra"


def register_needing_missing_package(tracking_uri: str, name: str, workdir: Path) -> str:
    """Register a version of `name`: a pyfunc model whose class lives in MISSING_PACKAGE, a
    module importable here only while this function runs (pickled by reference, as a model
    that needs an uninstalled package is); the version's number."""
    import mlflow

    (workdir / f"{MISSING_PACKAGE}.py").write_text(
        "import mlflow.pyfunc\n\n\n"
        "class Model(mlflow.pyfunc.PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return model_input.sum(axis=1)\n"
    )
    sys.path.insert(0, str(workdir))
    try:
        extra = importlib.import_module(MISSING_PACKAGE)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(f"aliasop-{name}")
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=extra.Model(),
                pip_requirements=[MISSING_PACKAGE],
                registered_model_name=name,
            )
    finally:
        sys.path.remove(str(workdir))
        sys.modules.pop(MISSING_PACKAGE, None)
    return str(info.registered_model_version)


def test_version_whose_server_cannot_load_is_rolled_back(
    serving: Serving, cluster: Cluster, tmp_path: Path
) -> None:
    """A version whose model needs a package the image does not have: the download succeeds,
    the server cannot load the model (its log says which module is missing) and never turns
    Ready; the rollout misses its deadline and is rolled back while the version that served
    before answers every request."""
    model = serving.model
    good = model.versions[-1].version
    wait_for(
        lambda: serving.serving(good, ("Ready", "Degraded")),
        timeout=60,
        message=f"version {good} serving",
    )
    bad = register_needing_missing_package(model.tracking_uri, model.name, tmp_path)

    with Client(serving) as requests:
        wait_for(lambda: len(requests.answers) >= 20, timeout=30, message="20 answers")
        serving.set_deadline(FAILING_DEADLINE_SECONDS)
        bikes.set_alias(model.tracking_uri, model.name, "champion", bad)

        def failing_server() -> tuple[client.V1Pod, str] | None:
            for pod in serving.pods():
                if pod.metadata.labels[VERSION_LABEL] != bad:
                    continue
                for previous in ([], ["--previous"]):
                    log = cluster.kubectl(
                        "logs",
                        "-n",
                        serving.namespace,
                        pod.metadata.name,
                        "-c",
                        SERVING_CONTAINER,
                        *previous,
                        check=False,
                    ).stdout
                    if f"No module named '{MISSING_PACKAGE}'" in log:
                        return pod, log
            return None

        pod, _ = wait_for(failing_server, timeout=90, interval=2, message="the server's error")
        (download,) = pod.status.init_container_statuses
        assert download.state.terminated.exit_code == 0  # the files came
        (server,) = pod.status.container_statuses
        assert not server.ready

        def rolled_back() -> bool:
            status = serving.status()
            return status.get("failedVersion") == bad and serving.only_version(good)

        wait_for(
            rolled_back, timeout=FAILING_DEADLINE_SECONDS + 90, interval=1, message="the rollback"
        )
        during = len(requests.answers)
        wait_for(lambda: len(requests.answers) >= during + 20, timeout=30, message="answers")
    assert requests.failures == [], requests.failures
    assert set(requests.answers) == {good}, Counter(requests.answers)


PROMOTION_DEADLINE_SECONDS = 180
CANARY_SAMPLE = 200  # requests per weight: the share's standard error is about 3 points


@pytest.mark.timeout(600, func_only=True)  # 4 serving pods to start, 3 weights, the promotion
def test_canary_weights_are_the_share_of_requests_the_canary_answers(
    serving: Serving, k8s: client.ApiClient, cluster: Cluster
) -> None:
    """Canary strategy at 4 replicas: at each weight (25, 50, 75), the share of requests sent
    through the Service that the canary answers, measured; kube-proxy spreads connections
    evenly over the Ready endpoints, so it is the canary's share of the pods. Each weight's
    pause lasts until promoted by hand, once measured."""
    model = serving.model
    stable, fresh = model.versions[1].version, model.versions[0].version
    bikes.set_alias(model.tracking_uri, model.name, "champion", stable)
    wait_for(lambda: serving.serving(stable), timeout=180, interval=1, message=f"{stable} serving")
    steps = [
        {"setWeight": w} if i % 2 == 0 else {"pause": {}}
        for i, w in enumerate([25, 0, 50, 0, 75, 0])
    ]
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "aliasop.io",
        "v1alpha1",
        serving.namespace,
        "modeldeployments",
        NAME,
        # The promotion starts 4 pods of the canary's version at once in the stable
        # Deployment: on a busy 2-core node none may be Ready within the module's 30 s.
        {
            "spec": {
                "replicas": 4,
                "rollout": {
                    "strategy": "Canary",
                    "steps": steps,
                    "progressDeadlineSeconds": PROMOTION_DEADLINE_SECONDS,
                },
            }
        },
    )
    wait_for(
        lambda: serving.serving(stable) and len(serving.pods()) == 4,
        timeout=240,
        interval=1,
        message=f"4 pods of version {stable}",
    )
    bikes.set_alias(model.tracking_uri, model.name, "champion", fresh)
    annotate = ("annotate", "--overwrite", "mdep", NAME, "-n", serving.namespace)

    shares: dict[int, float] = {}
    for step, weight in ((2, 25), (4, 50), (6, 75)):

        def paused(step: int = step) -> dict[str, Any] | None:
            canary = serving.status().get("canary") or {}
            return canary if (canary.get("step"), canary.get("phase")) == (step, "Paused") else None

        state = wait_for(paused, timeout=240, interval=1, message=f"the pause at {weight}%")
        # Discarded: requests routed before kube-proxy's next sync took the new endpoints.
        for _ in range(20):
            serving.predict()
        answers = [which(model, serving.predict()) for _ in range(CANARY_SAMPLE)]
        assert serving.status()["canary"]["step"] == step, "the pause ended while measuring"
        assert set(answers) <= {stable, fresh}, Counter(answers)
        shares[weight] = answers.count(fresh) / len(answers)
        print(f"weight {weight}%: the canary answered {shares[weight]:.1%} of {len(answers)}")
        assert state["weight"] == weight
        # Promoted past this pause; the annotation is taken back at once, so that the next
        # pause (after the next weight's pods turn Ready) waits for a promotion of its own.
        cluster.kubectl(*annotate, f"{PROMOTE_ANNOTATION}={fresh}")
        if step < 6:
            wait_for(
                lambda step=step: (serving.status().get("canary") or {}).get("step") != step,
                timeout=60,
                interval=0.2,
                message=f"the pause at {weight}% promoted",
            )
            cluster.kubectl(*annotate, f"{PROMOTE_ANNOTATION}-")
    print(f"canary share of requests by weight: {shares}")
    for weight, share in shares.items():
        assert abs(share - weight / 100) <= 0.15, shares
    wait_for(lambda: serving.serving(fresh), timeout=300, interval=1, message="the promotion")
