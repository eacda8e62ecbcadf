"""What the real node's parts run with, as data: pure functions of where the node lives
(`NodePaths`) and what its start chose (`Settings`). realnode writes them, and restarts a part
whose file no longer holds what these return."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from aliasop_dev.cluster import toml

NODE = "aliasop-real-0"
TAINT_KEY = "aliasop.io/real-node"
# What pods on the node use; tests/node/realnode.py names the smoke image too.
PAUSE_IMAGE = "localhost/aliasop/pause:1"
SMOKE_IMAGE = "localhost/aliasop/smoke:1"
CNI_BIN = Path("/usr/lib/cni")


@dataclass(frozen=True)
class Settings:
    """Chosen free once per start (kept in run/settings.env until `down`): the pods' /24, the
    bridge holding the node's address, and four ports."""

    subnet: str
    node_ip: str
    bridge: str
    kubelet_port: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int

    @classmethod
    def chosen(cls, subnet_index: int, ports: list[int]) -> Settings:
        kubelet, kubelet_healthz, proxy_healthz, proxy_metrics = ports
        return cls(
            subnet=f"10.245.{subnet_index}.0/24",
            node_ip=f"10.245.{subnet_index}.1",
            bridge=f"aliasop{subnet_index}",
            kubelet_port=kubelet,
            kubelet_healthz=kubelet_healthz,
            proxy_healthz=proxy_healthz,
            proxy_metrics=proxy_metrics,
        )

    def env(self) -> str:
        """KEY=VALUE lines, as settings.env holds them."""
        return "".join(f"{key}={value}\n" for key, value in asdict(self).items())

    @classmethod
    def parse(cls, text: str) -> Settings:
        pairs = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        ports = ("kubelet_port", "kubelet_healthz", "proxy_healthz", "proxy_metrics")
        return cls(
            subnet=pairs["subnet"],
            node_ip=pairs["node_ip"],
            bridge=pairs["bridge"],
            **{key: int(pairs[key]) for key in ports},
        )


@dataclass(frozen=True)
class NodePaths:
    """Where the node's parts keep their state (`run`, removed by down) and what of the
    cluster they use."""

    run: Path
    kubeconfig: Path
    pki: Path

    @property
    def socket(self) -> Path:
        return self.run / "containerd" / "containerd.sock"


def containerd_config(paths: NodePaths) -> dict[str, Any]:
    """The node's containerd, with its own socket and directories. restrict_oom_score_adj: the
    kubelet asks -998 for pod sandboxes, which this kind of machine refuses ("can't get final
    child's PID from pipe"). Network namespaces and runc's state stay under the state directory,
    so down finds them all."""
    state = paths.run / "containerd"
    return {
        "version": 2,
        "root": str(state / "root"),
        "state": str(state / "state"),
        "disabled_plugins": [
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing",
        ],
        "grpc": {"address": str(paths.socket)},
        "plugins": {
            "io.containerd.internal.v1.opt": {"path": str(state / "opt")},
            "io.containerd.grpc.v1.cri": {
                "sandbox_image": PAUSE_IMAGE,
                "restrict_oom_score_adj": True,
                "netns_mounts_under_state_dir": True,
                "containerd": {
                    "snapshotter": "overlayfs",
                    "default_runtime_name": "runc",
                    "runtimes": {
                        "runc": {
                            "runtime_type": "io.containerd.runc.v2",
                            "options": {"SystemdCgroup": False, "Root": str(state / "runc")},
                        }
                    },
                },
                "cni": {
                    "bin_dir": str(CNI_BIN),
                    "conf_dir": str(paths.run / "cni" / "net.d"),
                    "max_conf_num": 1,
                },
            },
        },
    }


def cni_config(paths: NodePaths, settings: Settings) -> dict[str, Any]:
    """The pods' network: a bridge with the node's address, host-local addresses from the
    subnet, a default route through the node (Service ClusterIPs are reached that way), no
    masquerading (pods talk to the host, to Services and to each other; nothing needs more)."""
    return {
        "cniVersion": "1.0.0",
        "name": settings.bridge,
        "plugins": [
            {
                "type": "bridge",
                "bridge": settings.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": settings.subnet, "gateway": settings.node_ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.run / "cni" / "ipam"),
                },
            }
        ],
    }


def kubelet_config(paths: NodePaths, settings: Settings) -> dict[str, Any]:
    """failCgroupV1: this kind of machine has v1/hybrid cgroups, which Kubernetes 1.35 refuses
    otherwise; cgroupsPerQOS, enforceNodeAllocatable, localStorageCapacityIsolation off: no QOS
    cgroup tree nor disk accounting to manage. No eviction and no image garbage collection: the
    images here cannot be pulled again. The API server reaches the kubelet (logs, exec) with the
    cluster's admin certificate."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": settings.node_ip,
        "port": settings.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": settings.kubelet_healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(paths.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.socket}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "localStorageCapacityIsolation": False,
        "evictionHard": {},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "podLogsDir": str(paths.run / "kubelet" / "pod-logs"),
        "maxPods": 30,
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
    }


def kube_proxy_config(paths: NodePaths, settings: Settings) -> dict[str, Any]:
    """iptables mode; leaves the host's conntrack settings alone; NodePorts only on the node's
    address."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(paths.kubeconfig)},
        "hostnameOverride": NODE,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{settings.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{settings.proxy_metrics}",
        "clusterCIDR": settings.subnet,
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": [f"{settings.node_ip}/32"],
        "oomScoreAdj": 0,
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"minSyncPeriod": "1s", "syncPeriod": "30s", "localhostNodePorts": False},
    }


HEADER = "# Written by aliasop_dev.cluster.realnode (python -m aliasop_dev.cluster up).\n"


def as_toml(data: dict[str, Any]) -> str:
    return HEADER + toml.dumps(data) + "\n"


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def as_yaml(data: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(data, sort_keys=False)
