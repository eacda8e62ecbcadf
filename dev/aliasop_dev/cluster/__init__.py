"""The test cluster: a kwok control plane (`controlplane`) and a real node beside it (`realnode`).

`python -m aliasop_dev.cluster up|down|status` (make cluster-up, make cluster-down) runs both;
`python -m aliasop_dev.cluster.realnode up|down|status|import ARCHIVE` the real node alone.
Their binaries come from tests/cluster/build.sh, the real node's packages from
tests/cluster/node-setup.sh; everything they keep lives under $ALIASOP_CACHE (default
~/.cache/aliasop), and ~/.kube/config is never touched.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# What the cluster is made of beside this code: versions.env (the Makefile includes it too),
# the kwok node and stages, the pause image's source.
FILES = REPO / "tests" / "cluster"
CLUSTER_NAME = "aliasop"


class ClusterError(Exception):
    """A step that failed; the message says which and why."""


def versions(path: Path = FILES / "versions.env") -> dict[str, str]:
    """K8S_VERSION, ETCD_VERSION, KWOK_VERSION from versions.env (KEY=VALUE lines)."""
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {k.strip(): v.strip() for k, sep, v in pairs if sep and not k.startswith("#")}


@dataclass(frozen=True)
class Layout:
    """Where the cluster's binaries and state are, under one cache directory."""

    cache: Path
    k8s_version: str

    @classmethod
    def from_environment(cls) -> Layout:
        cache = os.environ.get("ALIASOP_CACHE") or str(Path.home() / ".cache" / "aliasop")
        return cls(Path(cache), versions()["K8S_VERSION"])

    @property
    def bin(self) -> Path:
        """The binaries build.sh made for this Kubernetes version."""
        return self.cache / "cluster" / self.k8s_version / "bin"

    @property
    def kubeconfig(self) -> Path:
        return self.cache / "kubeconfig"

    @property
    def kwok_workdir(self) -> Path:
        """kwokctl's KWOK_WORKDIR: its clusters, pids and logs."""
        return self.cache / "kwok"

    @property
    def cluster_dir(self) -> Path:
        return self.kwok_workdir / "clusters" / CLUSTER_NAME

    @property
    def pki(self) -> Path:
        """The cluster's certificates, which kwokctl made."""
        return self.cluster_dir / "pki"

    @property
    def realnode_home(self) -> Path:
        return self.cache / "realnode"


def log(component: str, message: str) -> None:
    print(f"[{component}] {message}  ({time.strftime('%H:%M:%S')})", flush=True)
