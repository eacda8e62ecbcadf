"""Every failure ends with the last good version still serving and the problem reported."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from aliasop_dev import bikes, local

from resources import Versions, View, counts_by
from support import Cluster, TcpProxy, cache_dir, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("operator")]


def failed_requests(operator: local.LocalProcess) -> float:
    """MLflow requests that found no server, from the operator's /metrics."""
    return counts_by(operator, "aliasop_registry_requests_total", "result").get("unreachable", 0)


def restart_api_server(cluster: Cluster) -> None:
    """Kill kube-apiserver and start it again with the same command line; nothing else in
    the cluster restarts, and etcd keeps its data."""
    pid_file = cache_dir() / "kwok" / "clusters" / "aliasop" / "pids" / "kube-apiserver.pid"
    pid = int(pid_file.read_text())
    command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    workdir = os.readlink(f"/proc/{pid}/cwd")
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: cluster.kubectl("get", "--raw", "/readyz", check=False).returncode != 0,
        30,
        message="the API server to go down",
    )
    log = pid_file.parent.parent / "logs" / "kube-apiserver.log"
    with log.open("ab") as out:
        server = subprocess.Popen(
            command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    pid_file.write_text(str(server.pid))
    wait_for(
        lambda: cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
        60,
        message="the API server to come back",
    )


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def test_registry_outage_changes_nothing_and_the_pending_move_follows(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    proxy: TcpProxy,
    serving_v1: Callable[..., View],
    operator: local.LocalProcess,
) -> None:
    v1, v2 = two_versions
    bikes_view = serving_v1(trackingUri=proxy.url)
    before = bikes_view.deployment()

    proxy.stop()
    status = wait_for(
        lambda: condition(s := bikes_view.status(), "RegistryAvailable")["status"] == "False" and s,
        30,
        message="RegistryAvailable=False",
    )
    assert condition(status, "RegistryAvailable")["reason"] == "RegistryUnavailable"
    assert proxy.url in condition(status, "RegistryAvailable")["message"]
    assert status["phase"] == "Ready" and status["servingVersion"] == v1.version
    wait_for(lambda: "RegistryUnavailable" in bikes_view.events(), 30, message="the Event")

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)  # while aliasop is cut off
    failed = failed_requests(operator)
    wait_for(  # a couple more polls fail, without touching anything
        lambda: failed_requests(operator) >= failed + 2, 30, message="two more failed polls"
    )
    assert bikes_view.status()["lastResolvedTime"] == status["lastResolvedTime"]
    after = bikes_view.deployment()
    assert after is not None and before is not None
    assert after.metadata.generation == before.metadata.generation
    assert operator.running

    proxy.start()
    status = bikes_view.wait_serving(v2.version, timeout=5 + 15)  # one interval, plus the rollout
    assert condition(status, "RegistryAvailable")["status"] == "True"


def test_deleted_model_degrades_and_keeps_serving(
    model_name: str, mlflow_uri: str, serving_v1: Callable[..., View]
) -> None:
    bikes_view = serving_v1()
    before = bikes_view.deployment()
    MlflowClient(tracking_uri=mlflow_uri).delete_registered_model(model_name)
    status = wait_for(
        lambda: (s := bikes_view.status()).get("phase") == "Degraded" and s, 30, message="Degraded"
    )
    assert status["message"] == f"registered model {model_name!r} does not exist"
    assert condition(status, "Degraded")["reason"] == "ModelNotFound"
    after = bikes_view.deployment()
    assert after is not None and before is not None
    assert after.spec.template == before.spec.template
    assert bikes_view.pods_by_version() == {"1": 2}


def test_alias_flapping_converges_without_visiting_every_version(
    two_versions: Versions, model_name: str, mlflow_uri: str, serving_v1: Callable[..., View]
) -> None:
    v1, v2 = two_versions
    bikes_view = serving_v1()
    for move in range(20):
        bikes.set_alias(mlflow_uri, model_name, "champion", (v2, v1)[move % 2].version)
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    status = bikes_view.wait_serving(v2.version)
    rollouts = [h for h in status["history"] if h["reason"] != "Created"]
    assert 1 <= len(rollouts) <= 3, rollouts
    assert bikes_view.pods_by_version() == {v2.version: 2}


def test_operator_killed_mid_rollout_picks_it_up_once(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    operator: local.LocalProcess,
) -> None:
    v1, v2 = two_versions
    bikes_view = serving_v1()
    replica_sets_before = {rs.metadata.name for rs in bikes_view.replica_sets()}
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    wait_for(
        lambda: bikes_view.status().get("targetVersion") == v2.version, 30, message="rollout start"
    )
    operator.kill()
    operator.start()
    status = bikes_view.wait_serving(v2.version, timeout=60)
    new_replica_sets = {rs.metadata.name for rs in bikes_view.replica_sets()} - replica_sets_before
    assert len(new_replica_sets) == 1
    assert [(h["version"], h["outcome"]) for h in status["history"]] == [
        (v2.version, "Succeeded"),
        (v1.version, "Succeeded"),
    ]


@pytest.mark.disrupts_cluster
def test_api_server_restart_mid_rollout(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    operator: local.LocalProcess,
    installed: Cluster,
) -> None:
    v1, v2 = two_versions
    bikes_view = serving_v1()
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    restart_api_server(installed)
    status = bikes_view.wait_serving(v2.version, timeout=120)
    assert operator.running
    assert [h["version"] for h in status["history"]] == [v2.version, v1.version]
