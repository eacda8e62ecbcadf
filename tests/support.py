"""Helpers shared by the tests: waiting for a condition, and the test cluster's handle."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from aliasop_dev import local
from aliasop_dev.local import wait_for

__all__ = ["wait_for"]  # re-exported: the tests wait with the dev tooling's one helper


REPO = Path(__file__).resolve().parent.parent
# Operators a test runs of its own follow the resources it labels with this (their shard);
# the integration session's operator follows the others only.
SHARD_LABEL = "aliasop.io/shard"
# Test namespaces start with this, to tell them from others on a reused cluster.
TEST_NAMESPACE_PREFIX = "t-"
# The ModelDeployments of one pytest process (an xdist worker, or the only one) carry this
# label, with worker_label_value() as its value; that process's own operator (the `operator`
# fixture) follows those only, so that workers running side by side never touch each other's.
WORKER_LABEL = "aliasop.io/test-worker"


def worker_label_value() -> str:
    """This pytest process's value of WORKER_LABEL: its xdist worker and the run's ID (so that
    what a run left behind on a reused cluster is followed by nobody), or `main-<pid>`."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return f"main-{os.getpid()}"
    return f"{worker}-{os.environ.get('PYTEST_XDIST_TESTRUNUID', '')[:8]}"


def worker_labels() -> dict[str, str]:
    """The labels a ModelDeployment of this pytest process carries (WORKER_LABEL)."""
    return {WORKER_LABEL: worker_label_value()}


def cache_dir() -> Path:
    return Path(os.environ.get("ALIASOP_CACHE") or Path.home() / ".cache" / "aliasop")


def k8s_version() -> str:
    """K8S_VERSION from tests/cluster/versions.env, which names the binaries' directory."""
    for line in (REPO / "tests" / "cluster" / "versions.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "K8S_VERSION":
            return value.strip()
    raise RuntimeError("K8S_VERSION missing from tests/cluster/versions.env")


def cluster_script(command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `python -m aliasop_dev.cluster COMMAND` (up, down, status: make cluster-up...); its
    progress goes to this process's output."""
    return subprocess.run(
        [sys.executable, "-m", "aliasop_dev.cluster", command],
        check=check,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class Cluster:
    """The running test cluster: its kubeconfig and the kubectl built for it."""

    kubeconfig: str
    kubectl_binary: str

    @classmethod
    def from_cache(cls) -> Cluster:
        cache = cache_dir()
        return cls(
            kubeconfig=str(cache / "kubeconfig"),
            kubectl_binary=str(cache / "cluster" / k8s_version() / "bin" / "kubectl"),
        )

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster, capturing its output as text."""
        return subprocess.run(
            [self.kubectl_binary, "--kubeconfig", self.kubeconfig, *args],
            check=check,
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )


class TcpProxy:
    """A loopback TCP forwarder that can be taken down and brought back on the same port:
    an outage of whatever it fronts, as its clients see it (connection refused)."""

    def __init__(self, target_port: int, host: str = "127.0.0.1", port: int = 0) -> None:
        """Forward `host`:`port` (a free port when 0) to 127.0.0.1:`target_port`."""
        self.target_port = target_port
        self.host = host
        self.port: int = port or local.free_port()
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TcpProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Refuse new connections and cut the open ones (clients keep connections alive)."""
        if self._server is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not, and
            # the next connection would still be let through.
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                downstream, _ = server.accept()
            except OSError:
                return  # closed by stop()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                downstream.close()
                continue
            self._open.update((downstream, upstream))
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                self._open.discard(sock)
