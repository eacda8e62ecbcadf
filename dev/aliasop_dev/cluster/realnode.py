"""The test cluster's real node, beside the kwok one: containerd (runc, cgroupfs), a kubelet
registered as node aliasop-real-0, a CNI bridge for its pods, and kube-proxy (iptables mode) so
that Service ClusterIPs route to them. `python -m aliasop_dev.cluster up` starts it once the
control plane is up.

    python -m aliasop_dev.cluster.realnode up      start what is not running (or repair what
        died); exit 3 when the node cannot run on this machine or does not start, the reason
        also written to $ALIASOP_CACHE/realnode/unavailable
    ... down    stop it all: pods' containers and network namespaces, the node object,
        kube-proxy's iptables chains, the bridge; the kernel settings the kubelet changed are put
        back
    ... status  exit 0 when the node is Ready and every part runs, 3 when it cannot run here or
        the last `up` could not start it (the reason printed), 1 otherwise
    ... import ARCHIVE   import an image archive (docker or OCI, e.g. `podman save`) into the
        node's containerd; pods then use it with imagePullPolicy Never

The node is tainted aliasop.io/real-node=true:NoSchedule and labelled aliasop.io/real-node=true:
only pods that tolerate the taint and select the label run here. No registry is needed: the
pause image (tests/cluster/pause.c) and the smoke-test image (busybox from Debian's
busybox-static) are built here and imported. Everything lives under $ALIASOP_CACHE/realnode; the
bridge, the pod subnet and the ports are chosen free per cache. kube-proxy's iptables chains
(KUBE-*) are host-wide, so one real node runs per host at a time: /run/aliasop-real-node names
the cache that holds it. ALIASOP_REAL_NODE=0 turns the real node off.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
import tomllib
import traceback
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

from aliasop_dev.cluster import FILES, ClusterError, Layout, images
from aliasop_dev.cluster import log as log_as
from aliasop_dev.cluster.commands import Commands, Kubectl, Result
from aliasop_dev.cluster.nodeconfig import (
    CNI_BIN,
    NODE,
    PAUSE_IMAGE,
    SMOKE_IMAGE,
    TAINT_KEY,
    NodePaths,
    Settings,
    as_json,
    as_toml,
    as_yaml,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
)
from aliasop_dev.local import wait_for

# Exit code of `up` and `status`: the node cannot run here, or the last `up` could not start
# it. The control plane is healthy without it: tests that need it skip (or fail, in CI).
UNAVAILABLE = 3
HOST_OWNER = Path("/run/aliasop-real-node")
PARTS = ("containerd", "kubelet", "kube-proxy")
# The kernel settings the kubelet sets at start (protectKernelDefaults: false), and the one the
# node sets itself (bridged traffic through iptables: a pod's request to a Service whose pod is
# on the same bridge, itself included, is DNATed and answered back through kube-proxy's rules);
# down restores them.
KERNEL_SETTINGS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.bridge.bridge-nf-call-iptables",
)
# The smoke-test image's commands (busybox applets; not its wget, which crashes in Debian's
# static build).
SMOKE_APPLETS = ("sh", "httpd", "nc", "id", "touch", "cat", "echo", "hostname", "sleep", "ls")
HOST_COMMANDS = (
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "iptables",
    "ip",
    "ss",
    "sysctl",
    "pgrep",
    "gcc",
)


class CannotRun(Exception):
    """The real node cannot run on this machine; the message says why."""


class PartFailed(Exception):
    """containerd, the kubelet or kube-proxy did not start."""


def log(message: str) -> None:
    log_as("realnode", message)


@dataclass(frozen=True)
class ConfigFile:
    """A part's configuration file: what it should hold (`data`), written in its format."""

    path: Path
    data: dict[str, Any]
    render: Callable[[dict[str, Any]], str]
    parse: Callable[[str], Any]

    def current(self) -> bool:
        """Whether the file holds `data` (a part runs with today's configuration: one that
        changed restarts the part)."""
        try:
            return bool(self.parse(self.path.read_text()) == self.data)
        except (OSError, ValueError, yaml.YAMLError):
            return False

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.render(self.data))


@dataclass
class RealNode:
    layout: Layout
    commands: Commands = field(default_factory=Commands)
    host_owner: Path = HOST_OWNER

    def __post_init__(self) -> None:
        self.home = self.layout.realnode_home  # kept by down: the images built here, busybox
        self.run = self.home / "run"  # made by up, removed by down
        self.unavailable = self.home / "unavailable"
        # Made by an `up` that passed the checks and still failed, removed by the next `up`.
        self.failed = self.home / "failed"
        self.paths = NodePaths(self.run, self.layout.kubeconfig, self.layout.pki)
        self.kubectl = Kubectl(self.commands, self.layout.bin / "kubectl", self.layout.kubeconfig)
        self._settings: Settings | None = None

    # --- helpers ------------------------------------------------------------------------

    def ctr(self, *args: str | Path, timeout: float = 60, capture: bool = True) -> Result:
        """ctr, with the node's containerd and the kubelet's namespace."""
        prefix: list[str | Path] = ["ctr", "--address", self.paths.socket]
        prefix += ["--namespace", "k8s.io"]
        return self.commands.run([*prefix, *args], timeout=timeout, capture=capture)

    def record_unavailable(self, reason: str) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.unavailable.write_text(reason + "\n")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One `up` or `down` at a time per cache."""
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / "lock").open("w") as lock:

            def take() -> bool:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            try:
                wait_for(take, 120, 0.5, f"{self.home / 'lock'}")
            except TimeoutError:
                raise ClusterError(
                    f"another real node command has held {self.home / 'lock'} for 2 minutes"
                ) from None
            yield

    # --- what this machine needs --------------------------------------------------------

    def prerequisites(self) -> None:
        """Raises CannotRun when the node cannot run on this machine, ClusterError when there
        is no cluster yet."""
        if os.environ.get("ALIASOP_REAL_NODE", "1") == "0":
            raise CannotRun("turned off (ALIASOP_REAL_NODE=0)")
        if platform.system() != "Linux":
            raise CannotRun("it needs Linux")
        if os.geteuid() != 0:
            raise CannotRun("containerd, the kubelet and kube-proxy need root")
        built = [self.layout.bin / name for name in ("kubelet", "kube-proxy", "kubectl")]
        missing = [str(path) for path in built if not os.access(path, os.X_OK)]
        if missing:
            raise CannotRun(
                f"missing {' '.join(missing)}: run tests/cluster/build.sh (make cluster-build)"
            )
        missing = [name for name in HOST_COMMANDS if shutil.which(name) is None]
        plugins = [CNI_BIN / name for name in ("bridge", "host-local", "loopback")]
        missing += [str(path) for path in plugins if not os.access(path, os.X_OK)]
        if missing:
            raise CannotRun(
                f"missing {' '.join(missing)}: run tests/cluster/node-setup.sh (Debian's packages)"
            )
        cgroups = Path("/sys/fs/cgroup")
        if not (cgroups / "memory").is_dir() and not (cgroups / "cgroup.controllers").is_file():
            raise CannotRun("no cgroup filesystem at /sys/fs/cgroup")
        filesystems = Path("/proc/filesystems").read_text().split()
        if "overlay" not in filesystems and not self.modprobe("overlay"):
            raise CannotRun("the kernel has no overlay filesystem (containerd's snapshotter)")
        bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if not bridge_nf.exists() and not self.modprobe("br_netfilter"):
            raise CannotRun(
                "the kernel has no br_netfilter (bridged pod traffic through kube-proxy's rules)"
            )
        if not self.layout.kubeconfig.is_file() or not (self.layout.pki / "ca.crt").is_file():
            raise ClusterError(
                f"no cluster at {self.layout.kubeconfig}: run python -m aliasop_dev.cluster up"
            )

    def modprobe(self, module: str) -> bool:
        return self.commands.run(["modprobe", module]).returncode == 0

    def host_free(self) -> None:
        """The host's one real node (kube-proxy's chains are host-wide): free unless another
        cache's node is running."""
        try:
            other = self.host_owner.read_text().strip()
        except OSError:
            return
        if other and other != str(self.home) and self.running_in(Path(other)):
            raise CannotRun(
                f"the real node of {other} runs on this host (one at a time: kube-proxy's "
                f"iptables chains are host-wide); stop it with ALIASOP_CACHE={Path(other).parent} "
                "python -m aliasop_dev.cluster down"
            )

    def claim_host(self) -> None:
        self.host_free()
        self.host_owner.write_text(f"{self.home}\n")

    def owns_host(self) -> bool:
        try:
            return self.host_owner.read_text().strip() == str(self.home)
        except OSError:
            return False

    def running_in(self, home: Path) -> bool:
        return any(self.alive(name, home) for name in PARTS)

    # --- settings chosen once per start ---------------------------------------------------

    def settings(self) -> Settings:
        """The pod subnet, bridge and ports of this start: chosen free by the first `up` after
        a `down`, kept in run/settings.env."""
        if self._settings is None:
            saved = self.run / "settings.env"
            if not saved.exists():
                chosen = Settings.chosen(self.pick_subnet(), self.pick_ports(4))
                self.run.mkdir(parents=True, exist_ok=True)
                saved.write_text(chosen.env())
            self._settings = Settings.parse(saved.read_text())
        return self._settings

    def pick_subnet(self) -> int:
        """A /24 in 10.245.0.0/16 with no route or address of this host in it (the kwok node's
        pods have 10.244.0.0/16, fake: no routes; Services 10.96.0.0/16); its third number."""
        start = zlib.crc32(str(self.home).encode()) % 250
        for n in range(start, start + 250):
            subnet = f"10.245.{n % 250}.0/24"
            routes = self.commands.run(["ip", "-4", "route", "show", "root", subnet], check=True)
            addresses = self.commands.run(
                ["ip", "-4", "-o", "addr", "show", "to", subnet], check=True
            )
            if not routes.stdout.strip() and not addresses.stdout.strip():
                return n % 250
        raise CannotRun("no free /24 in 10.245.0.0/16 for the pods")

    def pick_ports(self, count: int) -> list[int]:
        """TCP ports nobody listens on, below the NodePort range (and above the local
        processes' range, aliasop_dev.local)."""
        ports: list[int] = []
        for port in range(29999, 29000, -1):
            if len(ports) == count:
                break
            listening = self.commands.run(["ss", "-Htln", f"sport = :{port}"], check=True)
            if not listening.stdout.strip():
                ports.append(port)
        if len(ports) < count:
            raise CannotRun("no free TCP ports in 29001-29999")
        return ports

    def config_files(self) -> dict[str, ConfigFile]:
        settings, paths = self.settings(), self.paths
        return {
            "containerd": ConfigFile(
                self.run / "containerd" / "config.toml",
                containerd_config(paths),
                as_toml,
                tomllib.loads,
            ),
            "cni": ConfigFile(
                self.run / "cni" / "net.d" / "10-aliasop.conflist",
                cni_config(paths, settings),
                as_json,
                json.loads,
            ),
            "kubelet": ConfigFile(
                self.run / "kubelet" / "config.yaml",
                kubelet_config(paths, settings),
                as_yaml,
                yaml.safe_load,
            ),
            "kube-proxy": ConfigFile(
                self.run / "kube-proxy.yaml",
                kube_proxy_config(paths, settings),
                as_yaml,
                yaml.safe_load,
            ),
        }

    # --- processes ----------------------------------------------------------------------

    def pidfile(self, name: str, home: Path | None = None) -> Path:
        return (home or self.home) / "run" / "pids" / f"{name}.pid"

    def pid(self, name: str, home: Path | None = None) -> int | None:
        try:
            return int(self.pidfile(name, home).read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self, name: str, home: Path | None = None) -> bool:
        """Whether the part `name` of the node under `home` (ours by default) runs: its command
        line names its configuration under HOME/run, so a stale pid file naming someone else
        does not count."""
        pid = self.pid(name, home)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
        except OSError:
            return False
        return f"{home or self.home}/run/".encode() in cmdline

    def start(self, name: str, args: Sequence[str | Path]) -> None:
        """Start the part `name` in its own session, logging to run/logs/NAME.log."""
        pid = self.commands.start(args, self.run / "logs" / f"{name}.log")
        self.pidfile(name).parent.mkdir(parents=True, exist_ok=True)
        self.pidfile(name).write_text(f"{pid}\n")

    def stop(self, name: str) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        pid = self.pid(name)
        if pid is not None and self.alive(name):
            for sig, seconds in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                try:
                    wait_for(lambda: not self.alive(name), seconds, 0.2, f"{name} to exit")
                    break
                except TimeoutError as error:
                    print(f"[realnode] {error}", file=sys.stderr)
        self.pidfile(name).unlink(missing_ok=True)

    @staticmethod
    def http_ok(url: str) -> bool:
        try:
            return httpx.get(url, timeout=2).is_success
        except httpx.HTTPError:
            return False

    # --- images -------------------------------------------------------------------------

    def fetch_busybox(self) -> Path:
        """busybox from Debian's busybox-static, unpacked from its .deb (installing the package
        would replace a machine's busybox)."""
        busybox = self.home / "busybox"
        if busybox.exists():
            return busybox
        debs = self.home / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        download = ["sh", "-c", f"cd {shlex.quote(str(debs))} && apt-get download busybox-static"]
        # Once more after apt-get update: a machine's package lists may be empty.
        if self.commands.run(download, timeout=300).returncode != 0 and (
            self.commands.run(["apt-get", "update", "-qq"], timeout=300).returncode != 0
            or self.commands.run(download, timeout=300).returncode != 0
        ):
            raise CannotRun(
                "could not download Debian's busybox-static (apt-get download busybox-static)"
            )
        with tempfile.TemporaryDirectory() as unpacked:
            deb = next(debs.glob("busybox-static_*.deb"))
            self.commands.run(["dpkg-deb", "-x", deb, unpacked], check=True)
            shutil.copyfile(Path(unpacked) / "bin" / "busybox", busybox)
        busybox.chmod(0o755)
        return busybox

    def build_images(self) -> None:
        """The pause image from pause.c and the smoke-test image (busybox), rebuilt when
        pause.c or the way they are made change."""
        built = self.home / "images"
        pause_c = FILES / "pause.c"
        recipe = [
            pause_c.read_bytes(),
            Path(images.__file__).read_bytes(),
            repr(SMOKE_APPLETS).encode(),
        ]
        stamp = hashlib.sha256(b"".join(recipe)).hexdigest()
        if (built / "stamp").exists() and (built / "stamp").read_text().strip() == stamp:
            return
        log("building the pause and smoke-test images")
        shutil.rmtree(built, ignore_errors=True)
        pause_root, smoke_root = built / "pause" / "rootfs", built / "smoke" / "rootfs"
        pause_root.mkdir(parents=True)
        (smoke_root / "bin").mkdir(parents=True)
        (smoke_root / "tmp").mkdir()
        gcc = ["gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror"]
        if self.commands.run([*gcc, "-o", pause_root / "pause", pause_c]).returncode != 0:
            raise CannotRun(
                "gcc could not build a static pause from pause.c (is libc6-dev installed?)"
            )
        arch = self.commands.run(["dpkg", "--print-architecture"], check=True).stdout.strip()
        images.oci_image(
            PAUSE_IMAGE, pause_root, {"Entrypoint": ["/pause"]}, arch, built / "pause.tar"
        )
        shutil.copyfile(self.fetch_busybox(), smoke_root / "bin" / "busybox")
        (smoke_root / "bin" / "busybox").chmod(0o755)
        for applet in SMOKE_APPLETS:
            (smoke_root / "bin" / applet).symlink_to("busybox")
        (smoke_root / "tmp").chmod(0o1777)
        smoke_config = {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]}
        images.oci_image(SMOKE_IMAGE, smoke_root, smoke_config, arch, built / "smoke.tar")
        (built / "stamp").write_text(stamp + "\n")

    def import_image(self, name: str, archive: Path) -> None:
        """Import into containerd unless the same digest is there."""
        digest = Path(f"{archive}.digest").read_text().strip()
        if digest in self.ctr("images", "ls", f"name=={name}").stdout:
            return
        result = self.ctr("images", "import", archive, timeout=300)
        if result.returncode != 0:
            raise ClusterError(f"ctr images import {archive} failed: {result.stderr.strip()}")

    # --- parts --------------------------------------------------------------------------

    def containerd_ready(self) -> bool:
        return self.ctr("version", timeout=10).returncode == 0

    def start_containerd(self) -> None:
        files = self.config_files()
        # containerd reads the CNI configuration anew when it changes.
        if not files["cni"].current():
            files["cni"].write()
        config = files["containerd"]
        if self.alive("containerd") and self.containerd_ready() and config.current():
            return
        self.stop("containerd")
        log(f"starting containerd ({self.paths.socket})")
        config.write()
        self.start("containerd", ["containerd", "--config", config.path])
        wait_for(self.containerd_ready, 30, 1, f"containerd to answer on {self.paths.socket}")

    def ensure_bridge(self) -> None:
        """The bridge exists before the kubelet starts: its address is the node's, where the
        kubelet listens (reachable from this host and the pods only) and the API server reaches
        it."""
        settings, run = self.settings(), self.commands.run
        if run(["ip", "link", "show", settings.bridge]).returncode != 0:
            run(["ip", "link", "add", "name", settings.bridge, "type", "bridge"], check=True)
        addresses = run(["ip", "-4", "addr", "show", "dev", settings.bridge], check=True).stdout
        if f" {settings.node_ip}/" not in addresses:
            run(["ip", "addr", "add", f"{settings.node_ip}/24", "dev", settings.bridge], check=True)
        run(["ip", "link", "set", settings.bridge, "up"], check=True)

    def cluster_id(self) -> str:
        """Which cluster the kubelet and kube-proxy were started for: a recreated cluster has a
        new CA."""
        return hashlib.sha256((self.layout.pki / "ca.crt").read_bytes()).hexdigest()

    def started_for(self) -> str:
        try:
            return (self.run / "cluster-id").read_text().strip()
        except OSError:
            return ""

    def save_kernel_settings(self) -> None:
        saved = self.home / "kernel-settings"
        if saved.exists():
            return
        values = [
            f"{key}={self.commands.run(['sysctl', '-n', key], check=True).stdout.strip()}\n"
            for key in KERNEL_SETTINGS
        ]
        saved.write_text("".join(values))

    def restore_kernel_settings(self) -> None:
        saved = self.home / "kernel-settings"
        if not saved.exists():
            return
        for line in saved.read_text().splitlines():
            self.commands.run(["sysctl", "-q", "-w", line])
        saved.unlink()

    def start_kubelet(self) -> None:
        settings, config = self.settings(), self.config_files()["kubelet"]
        if self.started_for() != self.cluster_id():
            self.stop("kubelet")
            self.stop("kube-proxy")
        healthz = f"http://127.0.0.1:{settings.kubelet_healthz}/healthz"
        since = 0.0
        # A kubelet whose node object is gone (deleted, or a new cluster) does not register
        # again.
        if not (
            self.alive("kubelet")
            and self.http_ok(healthz)
            and config.current()
            and self.kubectl.ok("get", "node", NODE)
        ):
            self.stop("kubelet")
            since = time.time()
            log(f"starting the kubelet: node {NODE} ({settings.node_ip}, pods {settings.subnet})")
            config.write()
            (self.run / "cluster-id").write_text(self.cluster_id() + "\n")
            self.save_kernel_settings()
            self.commands.run(
                ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"], check=True
            )
            kubelet = self.run / "kubelet"
            self.start(
                "kubelet",
                [
                    self.layout.bin / "kubelet",
                    "--config", config.path,
                    "--kubeconfig", self.layout.kubeconfig,
                    "--root-dir", kubelet / "root",
                    "--cert-dir", kubelet / "pki",
                    "--hostname-override", NODE,
                    "--node-ip", settings.node_ip,
                    "--node-labels", f"{TAINT_KEY}=true",
                ],
            )  # fmt: skip

        def ready_since() -> bool:
            # A restarted kubelet's node still shows its predecessor's Ready for a while.
            heartbeat = self.kubectl.node_ready(NODE)
            return heartbeat is not None and heartbeat.timestamp() >= int(since)

        wait_for(ready_since, 90, 1, f"node {NODE} Ready")

    def start_kube_proxy(self) -> None:
        settings, config = self.settings(), self.config_files()["kube-proxy"]
        healthz = f"http://127.0.0.1:{settings.proxy_healthz}/healthz"
        if self.alive("kube-proxy") and self.http_ok(healthz) and config.current():
            return
        self.stop("kube-proxy")
        log("starting kube-proxy (iptables)")
        config.write()
        self.start("kube-proxy", [self.layout.bin / "kube-proxy", "--config", config.path])
        wait_for(lambda: self.http_ok(healthz), 60, 1, "kube-proxy healthy")

    # --- commands -----------------------------------------------------------------------

    def healthy(self) -> bool:
        if not (self.run / "settings.env").exists():
            return False
        settings = self.settings()
        return (
            all(config.current() for config in self.config_files().values())
            and self.alive("containerd")
            and self.containerd_ready()
            and self.alive("kubelet")
            and self.http_ok(f"http://127.0.0.1:{settings.kubelet_healthz}/healthz")
            and self.started_for() == self.cluster_id()
            and self.kubectl.node_ready(NODE) is not None
            and self.alive("kube-proxy")
            and self.http_ok(f"http://127.0.0.1:{settings.proxy_healthz}/healthz")
        )

    def show_logs(self) -> None:
        """The end of each part's log, when a start fails."""
        for path in sorted((self.run / "logs").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-8:]
            print(f"--- {path}", *lines, sep="\n", file=sys.stderr)

    def up(self) -> int:
        """Start what is not running, or repair what died; 0, or UNAVAILABLE with the reason
        written (1 when there is no cluster to join)."""
        started = time.monotonic()
        with self.locked():
            self.failed.unlink(missing_ok=True)
            try:
                self.prerequisites()
                self.claim_host()
            except CannotRun as cannot:
                return self.cannot_run(str(cannot))
            try:
                was_healthy = self.start_parts()
            except CannotRun as cannot:
                return self.start_failed(str(cannot))
            except PartFailed as error:
                self.show_logs()
                print(f"[realnode] error: could not start the real node: {error}", file=sys.stderr)
                return self.start_failed(f"could not start (logs: {self.run / 'logs'})")
            except Exception as error:  # any other end of a start that passed the checks
                traceback.print_exc()
                return self.start_failed(f"realnode up failed ({error}; logs: {self.run / 'logs'})")
            self.unavailable.unlink(missing_ok=True)
        settings = self.settings()
        if was_healthy:
            log(f"node {NODE} already running and Ready")
        else:
            took = time.monotonic() - started
            network = f"pods {settings.subnet} on bridge {settings.bridge}"
            log(f"node {NODE} Ready in {took:.0f}s ({network})")
        return 0

    def start_parts(self) -> bool:
        """Each step leaves alone what is already right (images included: one changed is
        imported). Whether all was right already."""
        was_healthy = self.healthy()
        self.settings()
        self.build_images()
        self.ensure_bridge()
        try:
            self.start_containerd()
            self.import_image(PAUSE_IMAGE, self.home / "images" / "pause.tar")
            self.import_image(SMOKE_IMAGE, self.home / "images" / "smoke.tar")
            self.start_kubelet()
            self.start_kube_proxy()
        except (ClusterError, TimeoutError) as error:
            raise PartFailed(str(error)) from error
        return was_healthy

    def cannot_run(self, reason: str) -> int:
        self.record_unavailable(reason)
        print(f"[realnode] the real node cannot run here: {reason}", file=sys.stderr)
        return UNAVAILABLE

    def start_failed(self, reason: str) -> int:
        """A start that passed the checks and failed: unavailable, as where the node cannot run,
        and `status` answers so too until an `up` starts it (a control plane that runs is
        healthy without its real node)."""
        self.cannot_run(reason)
        self.failed.touch()
        return UNAVAILABLE

    def drain(self) -> None:
        """The pods on the node deleted through the API server: the kubelet stops them as it
        would any (CNI DEL, containers stopped), within 30 s."""
        if not (
            self.layout.kubeconfig.exists() and self.alive("kubelet") and self.alive("containerd")
        ):
            return
        deleted = self.kubectl(
            "delete", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={NODE}",
            "--grace-period=0", "--force", "--wait=false",
        )  # fmt: skip
        if deleted.returncode == 0:
            try:
                wait_for(lambda: not self.running_tasks(), 30, 1, "the kubelet to stop the pods")
            except TimeoutError as error:
                print(f"[realnode] {error}", file=sys.stderr)

    def running_tasks(self) -> list[str]:
        """The ids of containerd's running tasks (`ctr tasks ls`: TASK PID STATUS)."""
        rows = [line.split() for line in self.ctr("tasks", "ls").stdout.splitlines()[1:]]
        return [row[0] for row in rows if len(row) >= 3 and row[2] == "RUNNING"]

    def task_stopped(self, task: str) -> bool:
        return task not in self.running_tasks()

    def remove_containers(self) -> None:
        """Kill every container and sandbox still in the node's containerd and delete them
        (their rootfs and shm mounts go with them), with what CNI and the kubelet keep outside
        the node's directory."""
        containers = self.ctr("containers", "ls", "-q").stdout.split()
        for container in containers:
            for result in Path("/var/lib/cni/results").glob(f"*-{container}-*"):
                result.unlink(missing_ok=True)
        for link in Path("/var/log/containers").glob("*.log"):
            if link.is_symlink() and os.readlink(link).startswith(f"{self.run}/"):
                link.unlink(missing_ok=True)
        tasks = self.ctr("tasks", "ls", "-q").stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task)
        for task in tasks:
            try:
                wait_for(partial(self.task_stopped, task), 10, 0.5, f"task {task} to stop")
            except TimeoutError as error:
                print(f"[realnode] {error}", file=sys.stderr)
            self.ctr("tasks", "delete", "-f", task)
        for container in self.ctr("containers", "ls", "-q").stdout.split():
            self.ctr("containers", "delete", container)

    def remove_kube_chains(self) -> None:
        """What kube-proxy --cleanup leaves: the kubelet's own chains (KUBE-FIREWALL, which
        drops non-local packets to 127.0.0.0/8, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT). The
        rules that jump to a KUBE-* chain go first, then the chains. Only the host's one real
        node makes KUBE-* chains."""
        for iptables in ("iptables", "ip6tables"):
            for table in ("filter", "nat", "mangle"):

                def saved(table: str = table, iptables: str = iptables) -> list[str]:
                    result = self.commands.run([f"{iptables}-save", "-t", table])
                    return result.stdout.splitlines() if result.returncode == 0 else []

                for line in saved():
                    # Each rule as iptables-save quotes it (comments), undone with -D.
                    rule = shlex.split(line)
                    jumps = rule[rule.index("-j") + 1] if "-j" in rule else ""
                    if (
                        rule[:1] == ["-A"]
                        and not rule[1].startswith("KUBE-")
                        and jumps.startswith("KUBE-")
                    ):
                        self.commands.run([iptables, "-t", table, "-D", *rule[1:]])
                chains = [line[1:].split()[0] for line in saved() if line.startswith(":KUBE-")]
                for action in ("-F", "-X"):
                    for chain in chains:
                        self.commands.run([iptables, "-t", table, action, chain])

    def down(self) -> None:
        """Stop it all; what the node changed on this host is put back."""
        if not self.home.exists():
            return
        with self.locked():
            settings = self.settings() if (self.run / "settings.env").exists() else None
            if not self.run.exists() and not self.running_in(self.home):
                return
            log(f"stopping node {NODE}")
            self.drain()
            self.stop("kubelet")
            self.stop("kube-proxy")
            if self.owns_host():
                # kube-proxy's own cleanup of its iptables chains, then the kubelet's.
                self.commands.run([self.layout.bin / "kube-proxy", "--cleanup"])
                self.remove_kube_chains()
            # containerd (re)started if need be, to stop the pods' containers it knows.
            config = self.run / "containerd" / "config.toml"
            if config.exists() and not self.alive("containerd"):
                self.start("containerd", ["containerd", "--config", config])
                try:
                    wait_for(self.containerd_ready, 30, 1, "containerd")
                except TimeoutError as error:
                    print(f"[realnode] {error}", file=sys.stderr)
            if self.alive("containerd"):
                self.remove_containers()
            self.stop("containerd")
            # What is still mounted under the node's directory (network namespaces, volumes),
            # deepest first.
            mounts = self.commands.run(["findmnt", "-rn", "-o", "TARGET"]).stdout.splitlines()
            for mount in sorted((m for m in mounts if m.startswith(f"{self.run}/")), reverse=True):
                if self.commands.run(["umount", mount]).returncode != 0:
                    self.commands.run(["umount", "-l", mount])
            if (
                settings
                and self.commands.run(["ip", "link", "show", settings.bridge]).returncode == 0
            ):
                self.commands.run(["ip", "link", "delete", settings.bridge])
            if self.layout.kubeconfig.exists():
                self.kubectl("delete", "node", NODE, "--ignore-not-found", "--wait=false")
            self.restore_kernel_settings()
            # The kubelet's device-plugin socket has a fixed path; left alone if another
            # kubelet runs.
            if self.commands.run(["pgrep", "-x", "kubelet"]).returncode != 0:
                plugins = Path("/var/lib/kubelet/device-plugins")
                (plugins / "kubelet.sock").unlink(missing_ok=True)
                for directory in (plugins, plugins.parent):
                    with suppress(OSError):
                        directory.rmdir()
            if self.owns_host():
                self.host_owner.unlink(missing_ok=True)
            shutil.rmtree(self.run, ignore_errors=True)
            self._settings = None
            log(f"node {NODE} is down")

    def status(self) -> int:
        """0 when Ready and every part runs; UNAVAILABLE when it cannot run here or the last
        `up` could not start it; 1 otherwise."""
        if self.healthy():
            subnet = self.settings().subnet
            parts = ", ".join(PARTS)
            print(f"[realnode] node {NODE} Ready: {parts} running (pods {subnet})")
            return 0
        # Whether it could run here: a machine that cannot run it is not an unhealthy cluster.
        try:
            self.prerequisites()
            self.host_free()
        except CannotRun as cannot:
            self.record_unavailable(str(cannot))
            print(f"[realnode] cannot run here: {cannot}")
            return UNAVAILABLE
        except ClusterError:
            pass
        else:
            if self.failed.exists():
                reason = self.unavailable.read_text().strip() if self.unavailable.exists() else ""
                again = "`python -m aliasop_dev.cluster up` tries again"
                print(f"[realnode] the last start failed: {reason}; {again}")
                return UNAVAILABLE
        print(f"[realnode] node {NODE} not running or not Ready")
        return 1

    def import_archive(self, archive: Path) -> int:
        """Import an image archive (docker or OCI) into the node's containerd."""
        if not archive.is_file():
            raise ClusterError(f"no image archive {archive}")
        return self.ctr("images", "import", archive, timeout=600, capture=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aliasop_dev.cluster.realnode", description="the test cluster's real node"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status"):
        commands.add_parser(name)
    archive = commands.add_parser("import", help="import an image archive into containerd")
    archive.add_argument("archive", type=Path)
    args = parser.parse_args(argv)
    node = RealNode(Layout.from_environment())
    try:
        if args.command == "up":
            return node.up()
        if args.command == "down":
            node.down()
            return 0
        if args.command == "status":
            return node.status()
        return node.import_archive(args.archive)
    except (ClusterError, TimeoutError) as error:
        print(f"[realnode] error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
