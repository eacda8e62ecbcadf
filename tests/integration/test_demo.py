"""`aliasop-dev demo` end to end, non-interactively, as `make demo` runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from aliasop_dev import local

from support import Cluster

pytestmark = [pytest.mark.timeout(600), pytest.mark.demo]


def test_demo_runs_the_whole_loop_and_cleans_up(installed: Cluster, tmp_path: Path) -> None:
    """The demo brings its own operator, for its namespace; the tests' operators follow only
    ModelDeployments labelled as theirs (support.WORKER_LABEL), so none touches the demo's."""
    namespace = f"demo-{uuid.uuid4().hex[:6]}"
    mlflow_port = local.free_port()
    env = {
        **os.environ,
        "KUBECONFIG": installed.kubeconfig,
        "PATH": f"{Path(installed.kubectl_binary).parent}{os.pathsep}{os.environ['PATH']}",
        "ALIASOP_CACHE": str(tmp_path),
        "ALIASOP_DEMO_MLFLOW_PORT": str(mlflow_port),
        "ALIASOP_DEMO_NAMESPACE": namespace,
    }
    aliasop_dev = str(Path(sys.executable).parent / "aliasop-dev")
    try:
        run = subprocess.run(
            [aliasop_dev, "demo", "--canary"], env=env, capture_output=True, text=True, timeout=480
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        out = run.stdout
        for step in range(1, 9):
            assert f"[{step}/8]" in out
        assert "Event CanaryPromoted" in out
        assert "--artifact-uri models:/bikes/1" in out and "--artifact-uri models:/bikes/2" in out
        assert len(re.findall(r"-> \d+ rentals", out)) == 6  # three from each version
        assert "make demo-down" in out

        mdep = json.loads(
            installed.kubectl("get", "mdep", "bikes", "-n", namespace, "-o", "json").stdout
        )
        status = mdep["status"]
        assert (status["phase"], status["servingVersion"], status["aliasVersion"]) == (
            "Ready",
            "2",
            "2",
        )
        assert [(h["version"], h["reason"], h["outcome"]) for h in status["history"]] == [
            ("2", "AliasMoved", "Succeeded"),  # the canary
            ("1", "AliasMoved", "Succeeded"),
            ("2", "AliasMoved", "Succeeded"),
            ("1", "Created", "Succeeded"),
        ]
    finally:
        # While the demo's operator still runs, so that it can release the resource.
        installed.kubectl("delete", "mdep", "bikes", "-n", namespace, "--timeout=60s", check=False)
        down = subprocess.run(
            [aliasop_dev, "demo", "--down"], env=env, capture_output=True, text=True, timeout=60
        )
        installed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    assert down.returncode == 0, down.stderr
    assert not list((tmp_path / "demo").glob("*.pid"))
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{mlflow_port}/health", timeout=2)
