"""How the cluster's code runs this machine's commands and talks to the API server: one small
object each, so that the unit tests can hand it a fake."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aliasop_dev.cluster import ClusterError

# A command's result: subprocess's, so that the fakes can build one.
Result = subprocess.CompletedProcess[str]
# What `timeout(1)` answers for a command it stopped, and a shell for one it cannot find.
TIMED_OUT = 124
NOT_FOUND = 127


class Commands:
    """Runs commands on this machine. None inherits an open file beyond stdin/out/err
    (subprocess closes the rest), so no daemon holds a lock its caller took (`flock LOCK make
    cluster-up`)."""

    def run(
        self,
        args: Sequence[str | Path],
        *,
        timeout: float = 60,
        check: bool = False,
        capture: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run `args` to its end, with `env` added to this process's environment; its output
        is captured, or passed through (`capture=False`). A command that is missing exits 127,
        one stopped after `timeout` seconds 124; with `check`, any failure raises ClusterError
        with its output's end."""
        argv = [str(arg) for arg in args]
        try:
            result = subprocess.run(
                argv,
                capture_output=capture,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
        except FileNotFoundError:
            result = Result(argv, NOT_FOUND, "", f"{argv[0]}: not found")
        except subprocess.TimeoutExpired:
            result = Result(argv, TIMED_OUT, "", f"{argv[0]}: stopped after {timeout}s")
        if check and result.returncode != 0:
            raise ClusterError(failure(result))
        return Result(argv, result.returncode, result.stdout or "", result.stderr or "")

    def start(self, args: Sequence[str | Path], log: Path) -> int:
        """Start a daemon in its own session, its output appended to `log`; its pid."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            process = subprocess.Popen(
                [str(arg) for arg in args],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return process.pid


def failure(result: Result) -> str:
    output = (result.stderr or result.stdout or "").strip().splitlines()[-5:]
    return f"{' '.join(result.args)} exited {result.returncode}: " + " | ".join(output)


@dataclass
class Kubectl:
    """kubectl with the cluster's kubeconfig; every request gives up after 5 s."""

    commands: Commands
    binary: Path
    kubeconfig: Path

    def __call__(self, *args: str | Path, check: bool = False, timeout: float = 60) -> Result:
        prefix: list[str | Path] = [self.binary, "--kubeconfig", self.kubeconfig]
        prefix.append("--request-timeout=5s")
        return self.commands.run([*prefix, *args], check=check, timeout=timeout)

    def ok(self, *args: str | Path) -> bool:
        return self(*args).returncode == 0

    def get(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed; None when it fails or finds nothing
        (--ignore-not-found)."""
        result = self("get", *args, "-o", "json")
        if result.returncode != 0 or not result.stdout.strip():
            return None
        return json.loads(result.stdout)

    def raw(self, path: str) -> Any:
        """`kubectl get --raw PATH`, parsed as JSON; None when it fails."""
        result = self("get", "--raw", path)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def node_ready(self, name: str) -> datetime | None:
        """When the kubelet last reported node `name` Ready; None while it is not Ready."""
        node = self.get("node", name)
        conditions = (node or {}).get("status", {}).get("conditions", [])
        for condition in conditions:
            if condition["type"] == "Ready" and condition["status"] == "True":
                return parse_time(condition["lastHeartbeatTime"])
        return None


def parse_time(value: str) -> datetime:
    """A Kubernetes timestamp (RFC 3339, `Z`)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
