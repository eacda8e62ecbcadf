"""`kubectl aliasop` run by the test cluster's real kubectl (a plugin found on PATH), with a
kubeconfig, against the operator and a real MLflow server: pause and resume, a canary paused
then promoted, aborted then retried, an alias undone through MLflow with the resource
following."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from aliasop.kubectl import EXIT_NOT_FOUND, EXIT_NOTHING_TO_DO, EXIT_OK
from aliasop_dev import bikes

from resources import Versions, View
from support import Cluster, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("operator")]

REPLICAS = 4
# The console script `pip install` put beside this Python: kubectl finds it on PATH.
PLUGIN_DIR = Path(sys.executable).parent


def aliasop(
    installed: Cluster, *args: str, mlflow_uri: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubectl aliasop ARGS`, as a user runs it: kubectl finds kubectl-aliasop on PATH, and
    the plugin reads KUBECONFIG."""
    env = {
        **os.environ,
        "PATH": f"{PLUGIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": installed.kubeconfig,
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    if mlflow_uri is not None:
        env["MLFLOW_TRACKING_URI"] = mlflow_uri
    return subprocess.run(
        [installed.kubectl_binary, "aliasop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def watching(installed: Cluster, *args: str) -> Iterator[list[str]]:
    """`kubectl aliasop ARGS` left running: the lines it prints so far, read in a thread."""
    env = {
        **os.environ,
        "PATH": f"{PLUGIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": installed.kubeconfig,
    }
    process = subprocess.Popen(
        [installed.kubectl_binary, "aliasop", *args], env=env, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        yield lines
    finally:
        process.terminate()
        process.wait(timeout=10)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == EXIT_OK, result.stderr
    # Shown with the test's report (pytest -rP): docs/day2.md quotes it.
    print(f"$ kubectl {' '.join(result.args[1:])}\n{result.stdout}")
    return result.stdout


def canary_spec(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"replicas": REPLICAS, "rollout": {"strategy": "Canary", "steps": list(steps)}}


def canary_at(view: View, version: str, step: int, phase: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        canary = view.status().get("canary") or {}
        wanted = (version, step, phase)
        return (
            canary
            if (canary.get("version"), canary.get("step"), canary.get("phase")) == wanted
            else None
        )

    return wait_for(reached, 90, message=f"a canary of {version} at step {step} ({phase})")


def test_pause_holds_an_alias_move_and_resume_rolls_it_out(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    installed: Cluster,
) -> None:
    v1, v2 = two_versions
    view = serving_v1()
    ns = view.namespace
    assert "paused" in ok(aliasop(installed, "pause", "bikes", "-n", ns))
    assert view.mdep()["spec"]["paused"] is True
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    wait_for(
        lambda: view.status().get("aliasVersion") == v2.version,
        60,
        message="the alias move seen while paused",
    )
    shown = json.loads(ok(aliasop(installed, "get", "bikes", "-n", ns, "-o", "json")))
    assert shown["paused"] is True
    assert (shown["aliasVersion"], shown["servingVersion"]) == (v2.version, v1.version)
    assert shown["pods"] == [{"version": v1.version, "variant": "main", "ready": 2, "total": 2}]
    assert view.template_version() == v1.version

    with watching(installed, "get", "bikes", "-n", ns, "--watch") as frames:
        wait_for(lambda: "(paused)" in "".join(frames), 30, message="the watch's first frame")
        ok(aliasop(installed, "resume", "bikes", "-n", ns))
        assert view.mdep()["spec"]["paused"] is False
        view.wait_serving(v2.version)
        # The watch redraws as the resource changes: a frame shows the new version serving.
        wait_for(
            lambda: f"serving {v2.version}  last good {v2.version}" in "".join(frames),
            30,
            message="a redrawn frame",
        )


def test_a_canary_paused_for_a_promotion_is_shown_and_promoted(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    installed: Cluster,
) -> None:
    v1, v2 = two_versions
    view = serving_v1(**canary_spec({"setWeight": 25}, {"pause": {}}))
    ns = view.namespace
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    canary_at(view, v2.version, 2, "Paused")

    def canary_pod_ready() -> str | None:
        tree = ok(aliasop(installed, "get", "bikes", "-n", ns))
        return tree if f"version {v2.version} (canary): 1/1 ready" in tree else None

    tree = wait_for(canary_pod_ready, 60, message="the canary's pod ready in the tree")
    assert f"canary {v2.version} beside stable {v1.version}: step 2/2 weight 25% Paused" in tree
    assert f"version {v1.version} (main): 3/3 ready" in tree
    assert "`kubectl aliasop promote bikes`" in tree
    listed = ok(aliasop(installed, "list", "-n", ns)).splitlines()
    assert listed[1].split()[:2] == [ns, "bikes"] and "Paused" in listed[1]

    promoted = ok(aliasop(installed, "promote", "bikes", "-n", ns))
    assert f"aliasop.io/promote={v2.version}" in promoted
    view.wait_serving(v2.version, timeout=120)
    assert view.mdep()["status"].get("canary") is None
    # Nothing left to promote: says so, exit 4.
    again = aliasop(installed, "promote", "bikes", "-n", ns)
    assert again.returncode == EXIT_NOTHING_TO_DO and "no canary in flight" in again.stderr


def test_undo_moves_the_alias_back_in_mlflow_and_the_resource_follows(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    installed: Cluster,
) -> None:
    v1, v2 = two_versions
    view = serving_v1()
    ns = view.namespace
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    status = view.wait_serving(v2.version)
    assert (
        status["servingVersionUrl"] == f"{mlflow_uri}/#/models/{model_name}/versions/{v2.version}"
    )

    # The resource names no trackingUri (the operator's default): MLflow's own variable says.
    no_uri = aliasop(installed, "undo", "bikes", "-n", ns)
    assert no_uri.returncode == 1 and "MLFLOW_TRACKING_URI" in no_uri.stderr
    undone = ok(aliasop(installed, "undo", "bikes", "-n", ns, mlflow_uri=mlflow_uri))
    assert f"to version {v1.version}" in undone
    alias = MlflowClient(mlflow_uri).get_model_version_by_alias(model_name, "champion")
    assert alias.version == v1.version
    view.wait_serving(v1.version)

    # --to-version names it; a version that does not exist is refused, the alias untouched.
    missing = aliasop(
        installed, "undo", "bikes", "-n", ns, "--to-version", "99", mlflow_uri=mlflow_uri
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    ok(
        aliasop(
            installed, "undo", "bikes", "-n", ns, "--to-version", v2.version, mlflow_uri=mlflow_uri
        )
    )
    view.wait_serving(v2.version)


def test_a_missing_resource_exits_3_saying_so(installed: Cluster, namespace: str) -> None:
    result = aliasop(installed, "get", "nothing-here", "-n", namespace)
    assert result.returncode == EXIT_NOT_FOUND
    assert "not found" in result.stderr


# Needs the rollout state machine's abort and retry (aliasop.io/abort, aliasop.io/retry,
# aliasop.io/promote-full): fails until it honours them.
def test_a_canary_aborted_then_retried_then_promoted_fully(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    installed: Cluster,
) -> None:
    v1, v2 = two_versions
    view = serving_v1(
        **canary_spec({"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}})
    )
    ns = view.namespace
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    canary_at(view, v2.version, 2, "Paused")

    assert f"aliasop.io/abort={v2.version}" in ok(aliasop(installed, "abort", "bikes", "-n", ns))

    def aborted() -> dict[str, Any] | None:
        status = view.status()
        back = status.get("canary") is None and status.get("servingVersion") == v1.version
        return status if back and view.pods_by_version() == {v1.version: REPLICAS} else None

    status = wait_for(aborted, 90, message="the canary aborted, version 1 serving everything")
    assert "abort" in status.get("message", "").lower()
    # The alias is left where it is: the resource stays aborted, saying so.
    alias = MlflowClient(mlflow_uri).get_model_version_by_alias(model_name, "champion")
    assert alias.version == v2.version
    assert "abort" in ok(aliasop(installed, "get", "bikes", "-n", ns)).lower()

    assert f"aliasop.io/retry={v2.version}" in ok(aliasop(installed, "retry", "bikes", "-n", ns))
    canary_at(view, v2.version, 2, "Paused")
    full = ok(aliasop(installed, "promote", "bikes", "-n", ns, "--full"))
    assert f"aliasop.io/promote-full={v2.version}" in full
    view.wait_serving(v2.version, timeout=120)
