"""Shared fixtures, and the tiers' markers: each test is marked with its tier's (`unit`,
`integration`, `real_node`, `containers`) from its directory, automatically.

Under pytest-xdist (`make test` runs `pytest -n 4`) the tests are spread over workers one by
one, except those of the real node's modules, of GROUPED_MODULES and of the container tier: one
worker runs each such group, in file order (module fixtures, a shard, or a machine-wide
resource shared between their tests): see work_unit. Each worker has its own MLflow server,
operator and namespaces (see support.WORKER_LABEL).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from kubernetes import client, config

from aliasop_dev import bikes, chart, local

from support import REPO, TEST_NAMESPACE_PREFIX, Cluster, cache_dir, cluster_script

TESTS = Path(__file__).parent
TIERS = {
    "unit": "unit",
    "integration": "integration",
    "node": "real_node",
    "containers": "containers",
}
# Modules whose tests share a module fixture (a ModelDeployment on the real node, Prometheus,
# an S3 server...), or a shard or names of their own across the cluster: one worker runs each
# module's tests, in order. The container tier's two modules share podman's store: one unit.
GROUPED_TIERS = {"node"}
GROUPED_MODULES = {
    "test_analysis_providers.py",  # Prometheus and its scrape target, per module
    "test_artifact_stores.py",  # the S3 server and its bucket, per module
    "test_helm.py",  # shard `helm` and its operator's Lease
    "test_registry_auth.py",  # the basic-auth MLflow server, per session
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, TIERS[tier]))


def work_unit(nodeid: str) -> str:
    """What one xdist worker runs whole, in order: the test `nodeid` alone, or its module (or
    tier) when that is grouped."""
    path = PurePosixPath(nodeid.split("::", 1)[0])  # tests/<tier>/.../test_x.py
    tier = path.parts[1] if len(path.parts) > 2 else ""
    if tier == "containers":
        return "tests/containers"
    if tier in GROUPED_TIERS or path.name in GROUPED_MODULES:
        return str(path)
    return nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's load-scope scheduling with our work units (its own `xdist_group` marks are not
    seen with pytest 9.2, which no longer reads the node IDs xdist rewrites): the largest units
    first. A worker still busy is given the smallest unit left as its next, not the largest:
    queued behind the real node's long module, a large one would finish last."""
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            if self._pending_of(self.assigned_work.get(node, {})) > 0:
                self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
            super()._assign_work_unit(node)

    return WorkUnitScheduling(config, log)


# --- Kubernetes test cluster (python -m aliasop_dev.cluster) ----------------------------------


# Under xdist: which run's worker started the test cluster (its run ID), for the controller to
# stop it once every worker is done.
STARTED_BY = cache_dir() / "tests-started-the-cluster"


def pytest_configure(config: pytest.Config) -> None:
    # The controller of an xdist run chooses the run's ID (which its workers are given), so that
    # it knows it: pytest_sessionfinish below.
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        config.option.testrunuid = config.option.testrunuid or uuid.uuid4().hex
    # Each worker picks local ports from a part of the range of its own (local.free_port).
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        index = int(str(worker["workerid"]).removeprefix("gw"))
        os.environ[local.PORT_SLICE_ENV] = f"{index}/{worker['workercount']}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller of an xdist run stops the test cluster that one of its workers started."""
    config = session.config
    uid = getattr(config.option, "testrunuid", None)
    if hasattr(config, "workerinput") or not uid or not STARTED_BY.exists():
        return
    if STARTED_BY.read_text() == uid:
        STARTED_BY.unlink()
        cluster_script("down")


@contextlib.contextmanager
def one_worker_at_a_time() -> Iterator[None]:
    """Held by one pytest process at a time (xdist workers setting the cluster up)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / "tests-setup.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(autouse=True)
def cluster_gate(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that use the cluster share it; one marked `disrupts_cluster` (it restarts the API
    server) has it alone: it waits for the tests running on other workers to end, and none
    starts until it has. Writer-preferring: a disrupting test waiting at the gate stops new
    tests from entering, so a stream of short ones cannot keep it waiting."""
    if request.node.get_closest_marker("unit") is not None:
        yield
        return
    cache_dir().mkdir(parents=True, exist_ok=True)
    alone = request.node.get_closest_marker("disrupts_cluster") is not None
    with (
        (cache_dir() / "tests-gate.lock").open("w") as gate,
        (cache_dir() / "tests-cluster.lock").open("w") as shared,
    ):
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(shared, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The kwok test cluster: reuses a healthy running one, else starts it and stops it after
    (an xdist run's controller stops it once all its workers are done)."""
    with one_worker_at_a_time():  # the workers of a run start it once
        started_here = cluster_script("status", check=False).returncode != 0
        if started_here:
            cluster_script("up")
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if started_here and run:
        STARTED_BY.write_text(run)
    try:
        yield Cluster.from_cache()
    finally:
        if started_here and not run:
            cluster_script("down")


@pytest.fixture(scope="session")
def k8s(cluster: Cluster) -> client.ApiClient:
    """A Kubernetes API client with the cluster's admin credentials."""
    return config.new_client_from_config(config_file=cluster.kubeconfig)


@pytest.fixture
def namespace(k8s: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) when the test ends."""
    prefix = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"{TEST_NAMESPACE_PREFIX}{prefix}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(k8s)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def installed(cluster: Cluster) -> Cluster:
    """The CRD and manifests/ applied the way a user installs them."""
    with one_worker_at_a_time():  # two creating the same object: one would fail
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.aliasop.io")
        # An operator Deployment from an earlier manifests/ with another (immutable) selector
        # is replaced, as the upgrade notes tell users to.
        live = cluster.kubectl(
            "get", "deployment", chart.RELEASE, "-n", chart.NAMESPACE, "-o", "json", check=False
        )
        if live.returncode == 0 and chart.selector_changed(json.loads(live.stdout)):
            cluster.kubectl("delete", "deployment", chart.RELEASE, "-n", chart.NAMESPACE, "--wait")
        cluster.kubectl("apply", "-k", str(REPO / "manifests"))
    return cluster


# --- MLflow and models --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server on loopback (containers on the host network reach it too)."""
    port = local.free_port()
    server = local.mlflow_server(tmp_path_factory.mktemp("mlflow"), port).start()
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/health", timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def model_name() -> str:
    return f"bikes-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def logged_models(mlflow_uri: str) -> dict[str, bikes.LoggedModel]:
    """The two kinds of model (`linear`, `hourly`), trained and logged once per session: the
    tests' versions are registered from them."""
    return {kind: bikes.train_and_log(mlflow_uri, kind) for kind in ("linear", "hourly")}


@pytest.fixture
def register(
    mlflow_uri: str, model_name: str, logged_models: dict[str, bikes.LoggedModel]
) -> Callable[[str], bikes.RegisteredVersion]:
    """A new version of the test's model, of the session's model of that kind:
    register("linear")."""
    return lambda kind: bikes.register(mlflow_uri, model_name, logged_models[kind])


@pytest.fixture
def two_versions(
    mlflow_uri: str, model_name: str, register: Callable[[str], bikes.RegisteredVersion]
) -> tuple[bikes.RegisteredVersion, bikes.RegisteredVersion]:
    """Versions 1 (ridge) and 2 (hourly) of a fresh model, which predict differently;
    `@champion` points at version 1."""
    v1, v2 = register("linear"), register("hourly")
    assert v1.predictions != v2.predictions
    bikes.set_alias(mlflow_uri, model_name, "champion", v1.version)
    return v1, v2
