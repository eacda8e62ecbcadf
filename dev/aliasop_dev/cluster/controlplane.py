"""The test cluster's control plane: kwokctl's binary runtime with only the binaries build.sh
made (real etcd, kube-apiserver, kube-controller-manager, kube-scheduler; kwok simulates one
node, aliasop-node-0). What the simulated node and pods do is set by kwok Stage objects: the
defaults come from tests/cluster/stages.yaml (applied by every `up`), and tests may add their
own at run time. The kubeconfig is $ALIASOP_CACHE/kubeconfig; kwokctl's state lives in
$ALIASOP_CACHE/kwok."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from aliasop_dev.cluster import CLUSTER_NAME, FILES, ClusterError, Layout, versions
from aliasop_dev.cluster.commands import Commands, Kubectl, Result, parse_time
from aliasop_dev.cluster.realnode import RealNode
from aliasop_dev.local import wait_for

KWOK_NODE = "aliasop-node-0"
BINARIES = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "kwokctl",
]
# kwokctl alone may wait minutes for a wedged API server: give up on a start after these.
CREATE_SECONDS = 180
RESTART_SECONDS = 60


def log(message: str) -> None:
    from aliasop_dev.cluster import log as log_as

    log_as("cluster", message)


def kwokctl_config(layout: Layout) -> dict[str, Any]:
    """kwokctl's configuration of the cluster.

    Every option points at a local file, so kwokctl has nothing to download. kubeVersion tells
    kwokctl which flags the components take (its own default is a newer release).
    kubeAuthorization turns on --authorization-mode=Node,RBAC and the service-account signing
    keys (TokenRequest, kube-controller-manager's token/service-account controllers);
    kubeAdmission keeps the default admission plugins: kwokctl's defaults with a secure port,
    pinned because the tests depend on them. bindAddress keeps every component off the network
    (kwokctl's default is 0.0.0.0) but the API server, which pods on the real node reach through
    the `kubernetes` Service: its endpoint is the address kube-apiserver advertises, this host's
    default-route address, so it listens on every address (clients still need the cluster's
    certificates or a token). Its certificate (kwokctl's) names kubernetes.default.svc and the
    host's addresses. Ports are picked free by kwokctl and kept across restarts.

    enableCRDs: [Stage] makes kwok take its Stages from the API server instead of kwokctl's
    fixed built-in set: kwokctl installs the Stage CRD and no stage at all, stages.yaml holds the
    defaults, and tests can add or remove stages while the cluster runs. kwok-controller manages
    only the nodes annotated kwok.x-k8s.io/node=fake (node.yaml): kwokctl runs it with
    --manage-all-nodes, and it would then also write a fake status and IP for the real node's
    pods. The API server reaches the real node's kubelet (logs, exec) at its InternalIP with the
    cluster's admin certificate.

    Sized for the 1000-resource benchmark: disableQPSLimits lifts the client-side rate limits of
    kube-controller-manager and kube-scheduler (20 requests/s by default, which made the control
    plane, not the operator, the bottleneck) and the API server's in-flight limits; the Service
    range is a /16 (the default /24 holds 253 Services; every ModelDeployment has one). One of
    each component, so no leader election: with the in-flight limits lifted, an API server under
    a burst can take longer than the 5 s lease-renewal deadline, and a kube-controller-manager
    that loses its lease exits (and with it every rollout)."""
    bin_dir, pki = layout.bin, layout.pki

    def arg(key: str, value: str, override: bool = False) -> dict[str, Any]:
        return {"key": key, "value": value, **({"override": True} if override else {})}

    return {
        "kind": "KwokctlConfiguration",
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "options": {
            "runtime": "binary",
            "kubeVersion": layout.k8s_version,
            "kubeBinaryPrefix": str(bin_dir),
            "kubectlBinary": str(bin_dir / "kubectl"),
            "etcdBinary": str(bin_dir / "etcd"),
            "kwokControllerBinary": str(bin_dir / "kwok"),
            "securePort": True,
            "kubeAuthorization": True,
            "kubeAdmission": True,
            "bindAddress": "127.0.0.1",
            "enableCRDs": ["Stage"],
            "disableQPSLimits": True,
        },
        "componentsPatches": [
            {
                "name": "kube-apiserver",
                "extraArgs": [
                    arg("bind-address", "0.0.0.0", override=True),
                    arg("service-cluster-ip-range", "10.96.0.0/16"),
                    arg("kubelet-client-certificate", str(pki / "admin.crt")),
                    arg("kubelet-client-key", str(pki / "admin.key")),
                    arg("kubelet-preferred-address-types", "InternalIP,Hostname"),
                ],
            },
            {
                "name": "kwok-controller",
                "extraArgs": [
                    arg("manage-all-nodes", "false", override=True),
                    arg("manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake"),
                ],
            },
            {"name": "kube-controller-manager", "extraArgs": [arg("leader-elect", "false")]},
            {"name": "kube-scheduler", "extraArgs": [arg("leader-elect", "false")]},
        ],
    }


@dataclass
class ControlPlane:
    layout: Layout
    commands: Commands = field(default_factory=Commands)
    # Stopped before the control plane: its kubelet and kube-proxy talk to this cluster.
    node: RealNode | None = None

    def __post_init__(self) -> None:
        if self.node is None:
            self.node = RealNode(self.layout, self.commands)
        # kwokctl keeps its state under KWOK_WORKDIR and looks up kubectl on PATH before it
        # would download one.
        self.kwok_env = {
            "KWOK_WORKDIR": str(self.layout.kwok_workdir),
            "PATH": f"{self.layout.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.kubectl = Kubectl(self.commands, self.layout.bin / "kubectl", self.layout.kubeconfig)

    @property
    def config_file(self) -> Path:
        return self.layout.kwok_workdir / f"{CLUSTER_NAME}.yaml"

    @property
    def created_with(self) -> Path:
        """A copy of the configuration the cluster was created with: kwokctl reads its
        configuration only when it creates a cluster, so a changed one takes a new cluster."""
        return self.layout.cluster_dir / "aliasop-config.yaml"

    def kwokctl(self, *args: str | Path, timeout: float = 60, capture: bool = True) -> Result:
        """kwokctl on this cluster; what it says on a failure goes to stderr."""
        result = self.commands.run(
            [self.layout.bin / "kwokctl", "--name", CLUSTER_NAME, *args],
            timeout=timeout,
            capture=capture,
            env=self.kwok_env,
        )
        if result.returncode != 0 and capture:
            sys.stderr.write(result.stderr)
        return result

    # --- checks -------------------------------------------------------------------------

    def config_current(self) -> bool:
        """Whether the cluster was created with today's configuration (one from an older
        version of this code has no record of it, and kwokctl would keep its old options)."""
        if not self.created_with.exists():
            return False
        created: Any = yaml.safe_load(self.created_with.read_text())
        return bool(created == kwokctl_config(self.layout))

    def server_version(self) -> str:
        version = self.kubectl.raw("/version")
        return str(version.get("gitVersion", "")) if isinstance(version, dict) else ""

    def pids(self) -> list[int]:
        """The pids kwokctl recorded for the cluster's processes."""
        files = sorted((self.layout.cluster_dir / "pids").glob("*.pid"))
        return [int(text) for f in files if (text := f.read_text().strip()).isdigit()]

    def ours(self, pid: int) -> bool:
        """Whether `pid` is a live process running one of our binaries (a stale pid file may
        name someone else). /proc/PID/exe names the binary's real path."""
        try:
            exe = Path(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            return False
        binaries = (self.layout.cache / "cluster").resolve()
        return exe.is_relative_to(binaries) and exe.parent.name == "bin"

    def gone(self, pid: int) -> bool:
        return not self.ours(pid)

    def components_alive(self) -> bool:
        """Every component kwokctl started still runs: /readyz and a Ready node do not show a
        dead kube-controller-manager (it exits when it loses its leader lease), and without it
        no Deployment ever gets a pod."""
        pids = self.pids()
        return bool(pids) and all(self.ours(pid) for pid in pids)

    def healthy(self) -> bool:
        return (
            self.config_current()
            and self.layout.kubeconfig.exists()
            and self.components_alive()
            and self.kubectl.ok("get", "--raw", "/readyz")
            and self.kubectl.node_ready(KWOK_NODE) is not None
            and self.server_version() == self.layout.k8s_version
        )

    def check_binaries(self) -> None:
        for name in BINARIES:
            if not os.access(self.layout.bin / name, os.X_OK):
                raise ClusterError(
                    f"missing {self.layout.bin / name}: run tests/cluster/build.sh "
                    "(make cluster-build) first"
                )

    # --- steps --------------------------------------------------------------------------

    def create(self) -> None:
        """Create the cluster and start it."""
        self.layout.kwok_workdir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(kwokctl_config(self.layout), sort_keys=False))
        # --kubeconfig '' keeps kwokctl away from ~/.kube/config.
        wait = f"{CREATE_SECONDS}s"
        args: list[str | Path] = [
            "-c",
            self.config_file,
            "create",
            "cluster",
            "--kubeconfig",
            "",
            "--wait",
            wait,
        ]
        if self.kwokctl(*args, timeout=CREATE_SECONDS, capture=False).returncode != 0:
            raise ClusterError("kwokctl create cluster failed")
        shutil.copyfile(self.config_file, self.created_with)

    def restart(self) -> None:
        """Stop the existing cluster and start it again from the configuration kwokctl saved
        when it created it. Stop first: kwokctl only starts components whose pid is not alive,
        so a wedged or just-killed (zombie) process would otherwise be left in place. Not
        `create cluster` again: on an existing cluster, kwokctl v0.8.0 then re-installs the
        Stage CRD with an update that lacks a resourceVersion, which the API server refuses."""
        if self.kwokctl("stop", "cluster", capture=False).returncode != 0:
            raise ClusterError("kwokctl stop cluster failed")
        wait = f"{RESTART_SECONDS}s"
        if self.kwokctl("start", "cluster", "--wait", wait, timeout=RESTART_SECONDS).returncode:
            raise ClusterError("kwokctl start cluster failed")

    def apply_stages(self) -> None:
        """The default stages (idempotent: an existing cluster picks up changes to
        stages.yaml). Server-side apply: a client-side one waits about 2 s for the
        just-installed CRD's OpenAPI schema."""

        def established() -> bool:
            crd = self.kubectl.get("crd", "stages.kwok.x-k8s.io")
            conditions = (crd or {}).get("status", {}).get("conditions", [])
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        wait_for(established, 60, 1, "the kwok Stage CRD")
        stages = FILES / "stages.yaml"
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", stages, check=True)

    def take_over_node_lease(self, stopped: float) -> None:
        """After a restart, the node's Lease still names the kwok-controller that was stopped,
        and the new one leaves the node and its pods alone until that lease expires (200 s
        here): meanwhile no pod would start or go away, though the node still shows Ready. A
        lease last renewed by `stopped` (epoch seconds) is such a leftover: delete it, so the
        new kwok-controller creates its own at its next try, and wait for that."""
        lease_args = ("-n", "kube-node-lease", "lease", KWOK_NODE)
        lease = self.kubectl.get(*lease_args, "--ignore-not-found")
        renewed = (lease or {}).get("spec", {}).get("renewTime")
        if renewed and parse_time(renewed).timestamp() <= stopped:
            log(f"handing node {KWOK_NODE}'s lease over to the new kwok-controller")
            self.kubectl("delete", *lease_args, "--ignore-not-found", check=True)
            wait_for(
                lambda: self.kubectl.ok("get", *lease_args),
                90,
                1,
                f"kwok-controller to take node {KWOK_NODE}'s lease",
            )

    def finish(self) -> None:
        """Write the kubeconfig, register the node, and wait until the cluster can run pods."""
        got = self.kwokctl("get", "kubeconfig")
        if got.returncode != 0:
            raise ClusterError("kwokctl get kubeconfig failed")
        partial = self.layout.kubeconfig.with_suffix(".tmp")
        partial.write_text(got.stdout)
        partial.replace(self.layout.kubeconfig)
        log("waiting for the API server")
        wait_for(lambda: self.kubectl.ok("get", "--raw", "/readyz"), 120, 1, "API server /readyz")
        log("applying the default kwok stages")
        self.apply_stages()
        log(f"registering node {KWOK_NODE}")
        node = FILES / "node.yaml"
        wait_for(lambda: self.kubectl.ok("apply", "-f", node), 60, 1, "apply node")
        wait_for(lambda: self.kubectl.node_ready(KWOK_NODE), 120, 1, f"node {KWOK_NODE} Ready")
        # The default ServiceAccount appears once kube-controller-manager is working.
        wait_for(
            lambda: self.kubectl.ok("-n", "default", "get", "serviceaccount", "default"),
            120,
            1,
            "default ServiceAccount",
        )
        if not self.healthy():
            raise ClusterError(
                f"up but not healthy: server {self.server_version()}, "
                f"want {self.layout.k8s_version}"
            )

    # --- commands -----------------------------------------------------------------------

    def up(self) -> None:
        """Start the cluster, or reuse a healthy one, or repair a stopped or broken one; one
        made with another configuration is recreated. Raises ClusterError when it cannot,
        having left nothing running."""
        self.check_binaries()
        started = time.monotonic()
        if self.layout.cluster_dir.exists() and not self.config_current():
            log(f"cluster {CLUSTER_NAME} was created with another configuration: recreating it")
            self.down()
        if self.healthy():
            self.apply_stages()
            log(
                f"cluster {CLUSTER_NAME} already running and healthy ({self.layout.k8s_version}); "
                f"kubeconfig: {self.layout.kubeconfig}"
            )
        elif self.layout.cluster_dir.exists():
            log(f"cluster {CLUSTER_NAME} exists but is not healthy: restarting it")
            stopped = time.time()
            try:
                self.restart()
                self.finish()
                self.take_over_node_lease(stopped)
            except (ClusterError, TimeoutError) as error:
                log(f"restart failed ({error}): recreating cluster {CLUSTER_NAME}")
                self.down()
                self.create_or_clean_up()
        else:
            version = versions()
            log(
                f"creating cluster {CLUSTER_NAME} (kube {self.layout.k8s_version}, "
                f"etcd {version['ETCD_VERSION']}, kwok {version['KWOK_VERSION']})"
            )
            self.create_or_clean_up()
        took = time.monotonic() - started
        log(f"cluster {CLUSTER_NAME} is up in {took:.0f}s; kubeconfig: {self.layout.kubeconfig}")

    def create_or_clean_up(self) -> None:
        """Create the cluster; where that fails for good, show why and leave nothing running."""
        try:
            self.create()
            self.finish()
        except (ClusterError, TimeoutError) as error:
            print(
                f"[cluster] error: could not start cluster {CLUSTER_NAME}: {error}", file=sys.stderr
            )
            print("[cluster] the end of its logs:", file=sys.stderr)
            for path in sorted((self.layout.cluster_dir / "logs").glob("*.log")):
                lines = path.read_text(errors="replace").splitlines()[-15:]
                print(f"==> {path} <==", *lines, sep="\n", file=sys.stderr)
            self.down()
            raise ClusterError(f"could not start cluster {CLUSTER_NAME}") from error

    def down(self) -> None:
        """Delete the cluster and its real node; none of their processes is left running."""
        if self.node is not None:
            try:
                self.node.down()
            except (ClusterError, OSError) as error:
                log(f"stopping the real node failed: {error}")
        pids = self.pids()
        if self.layout.cluster_dir.exists():
            log(f"deleting cluster {CLUSTER_NAME}")
            # kwokctl removes the cluster's context from --kubeconfig (it rejects ''); ours is
            # rewritten on every `up` and removed below anyway.
            deleted = self.kwokctl("delete", "cluster", "--kubeconfig", self.layout.kubeconfig)
            if deleted.returncode != 0:
                log("kwokctl delete failed; cleaning up by hand")
        # kwokctl kills by pid file; make sure none of those processes outlives the cluster.
        for pid in pids:
            if self.ours(pid):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            try:
                wait_for(partial(self.gone, pid), 10, 0.2, f"process {pid} to exit")
            except TimeoutError as error:
                print(f"[cluster] {error}", file=sys.stderr)
        shutil.rmtree(self.layout.cluster_dir, ignore_errors=True)
        self.layout.kubeconfig.unlink(missing_ok=True)
        log(f"cluster {CLUSTER_NAME} is down")

    def status(self) -> bool:
        """Whether the API server answers, the kwok node is Ready, and the cluster was made
        with today's configuration; kwokctl's view of the components printed first."""
        if self.layout.cluster_dir.exists():
            self.kwokctl("get", "components", capture=False)
            if not self.config_current():
                log(
                    f"cluster {CLUSTER_NAME} was created with another configuration: "
                    "`up` recreates it"
                )
                return False
        if not self.healthy():
            log("not running or not healthy")
            return False
        log(
            f"healthy: {self.server_version()}, node {KWOK_NODE} Ready; "
            f"kubeconfig: {self.layout.kubeconfig}"
        )
        return True
