"""The test cluster's tooling (aliasop_dev.cluster): the files it writes, parsed back; its exit
codes; and what it asks of this machine, through a fake command runner and temporary
directories. The real cluster runs it in tests/integration and tests/node."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from aliasop_dev import local
from aliasop_dev.cluster import ClusterError, Layout, images, toml
from aliasop_dev.cluster.__main__ import status as cluster_status
from aliasop_dev.cluster.commands import Commands, Result
from aliasop_dev.cluster.controlplane import BINARIES, KWOK_NODE, ControlPlane, kwokctl_config
from aliasop_dev.cluster.nodeconfig import (
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
from aliasop_dev.cluster.realnode import UNAVAILABLE, CannotRun, PartFailed, RealNode

pytestmark = pytest.mark.timeout(60)

SETTINGS = Settings.chosen(7, [29999, 29998, 29997, 29996])


class FakeCommands(Commands):
    """Answers each command with `respond(argv)` (exit 0, no output by default) and records
    it."""

    def __init__(self, respond: Callable[[list[str]], Result | None] = lambda argv: None):
        self.respond = respond
        self.calls: list[list[str]] = []

    def run(
        self,
        args: Sequence[str | Path],
        *,
        timeout: float = 60,
        check: bool = False,
        capture: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        argv = [str(arg) for arg in args]
        self.calls.append(argv)
        return self.respond(argv) or Result(argv, 0, "", "")

    def start(self, args: Sequence[str | Path], log: Path) -> int:
        self.calls.append([str(arg) for arg in args])
        return 999_999_999  # no such process


def output(argv: list[str], stdout: str, code: int = 0) -> Result:
    return Result(argv, code, stdout, "")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "cache", "v1.35.4")


# --- the files written, as data ---------------------------------------------------------------


def test_containerd_config_is_toml_containerd_reads(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path / "run", tmp_path / "kubeconfig", tmp_path / "pki")
    data = containerd_config(paths)
    parsed = tomllib.loads(as_toml(data))
    assert parsed == data
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["runtimes"]["runc"]["options"] == {
        "SystemdCgroup": False,
        "Root": str(tmp_path / "run" / "containerd" / "runc"),
    }
    assert parsed["grpc"]["address"] == str(paths.socket)


def test_toml_writer_quotes_what_toml_needs() -> None:
    data = {
        "a": 'quote " and \\ and ü',
        "n": 0,
        "flag": False,
        "list": ["x", 1, True],
        "dotted.key": {"inner": {"deep": "v"}, "x": 1},
    }
    assert tomllib.loads(toml.dumps(data)) == data
    with pytest.raises(TypeError):
        toml.dumps({"f": 1.5})


def test_node_configs_parse_back(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path / "run", tmp_path / "kubeconfig", tmp_path / "pki")
    assert json.loads(as_json(cni_config(paths, SETTINGS))) == cni_config(paths, SETTINGS)
    kubelet = yaml.safe_load(as_yaml(kubelet_config(paths, SETTINGS)))
    assert kubelet == kubelet_config(paths, SETTINGS)
    # YAML's `true` would not be the string the taint's value must be.
    assert kubelet["registerWithTaints"][0]["value"] == "true"
    assert kubelet["address"] == "10.245.7.1" and kubelet["port"] == 29999
    proxy = yaml.safe_load(as_yaml(kube_proxy_config(paths, SETTINGS)))
    assert proxy["conntrack"]["tcpEstablishedTimeout"] == "0s"
    assert proxy["healthzBindAddress"] == "127.0.0.1:29997"


def test_settings_survive_their_file() -> None:
    assert Settings.parse(SETTINGS.env()) == SETTINGS
    assert SETTINGS.env().splitlines()[:3] == [
        "subnet=10.245.7.0/24",
        "node_ip=10.245.7.1",
        "bridge=aliasop7",
    ]


def test_kwokctl_config_points_at_the_built_binaries(layout: Layout) -> None:
    config = kwokctl_config(layout)
    assert yaml.safe_load(yaml.safe_dump(config)) == config
    assert config["options"]["kubeBinaryPrefix"] == str(layout.bin)
    patches = {patch["name"]: patch["extraArgs"] for patch in config["componentsPatches"]}
    assert {"key": "manage-all-nodes", "value": "false", "override": True} in patches[
        "kwok-controller"
    ]


def test_a_cluster_made_with_another_configuration_is_not_current(layout: Layout) -> None:
    control_plane = ControlPlane(layout, FakeCommands())
    assert not control_plane.config_current()  # no record: an older tool made it
    control_plane.created_with.parent.mkdir(parents=True)
    config = kwokctl_config(layout)
    # Compared as data: the same configuration in another layout is current.
    control_plane.created_with.write_text(json.dumps(config, indent=4))
    assert control_plane.config_current()
    config["options"]["disableQPSLimits"] = False
    control_plane.created_with.write_text(yaml.safe_dump(config))
    assert not control_plane.config_current()
    assert not control_plane.healthy()


# --- images ----------------------------------------------------------------------------------


def test_oci_images_are_deterministic(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "busybox").write_bytes(b"\x7fELF...")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    digests = [
        images.oci_image("localhost/x:1", rootfs, {"Cmd": ["/bin/sh"]}, "amd64", tmp_path / name)
        for name in ("a.tar", "b.tar")
    ]
    assert digests[0] == digests[1]
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert (tmp_path / "a.tar.digest").read_text().strip() == digests[0]

    with tarfile.open(tmp_path / "a.tar") as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]
    for name, content in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(content).hexdigest() == name.rsplit("/", 1)[1]
    entry = json.loads(files["index.json"])["manifests"][0]
    assert entry["digest"] == digests[0]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/x:1"
    manifest = json.loads(files[f"blobs/sha256/{digests[0].removeprefix('sha256:')}"])
    layer = files[f"blobs/sha256/{manifest['layers'][0]['digest'].removeprefix('sha256:')}"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [".", "./bin", "./bin/busybox", "./bin/sh"]
    assert all(m.uid == 0 and m.mtime == 0 for m in members)
    assert members[3].issym() and members[3].linkname == "busybox"


def test_an_imported_image_is_not_imported_again(layout: Layout, tmp_path: Path) -> None:
    archive = tmp_path / "pause.tar"
    Path(f"{archive}.digest").write_text("sha256:abc\n")
    listed = "REF TYPE DIGEST\nlocalhost/aliasop/pause:1 application/... sha256:abc 1 KiB\n"
    commands = FakeCommands(lambda argv: output(argv, listed) if "ls" in argv else None)
    RealNode(layout, commands).import_image("localhost/aliasop/pause:1", archive)
    assert not any("import" in call for call in commands.calls)

    commands = FakeCommands(
        lambda argv: output(argv, "REF TYPE DIGEST\n") if "ls" in argv else None
    )
    RealNode(layout, commands).import_image("localhost/aliasop/pause:1", archive)
    assert commands.calls[-1][-3:] == ["images", "import", str(archive)]


# --- the real node: what it chooses and cleans up ---------------------------------------------


def test_settings_avoid_used_subnets_and_ports(layout: Layout) -> None:
    def respond(argv: list[str]) -> Result | None:
        if argv[:3] == ["ip", "-4", "route"] and argv[-1] != "10.245.9.0/24":
            return output(argv, f"{argv[-1]} dev eth0\n")  # every /24 but .9 is routed
        if argv[0] == "ss" and argv[-1] in ("sport = :29999", "sport = :29997"):
            return output(argv, "LISTEN 0 4096 *:2999x *:*\n")
        return None

    settings = RealNode(layout, FakeCommands(respond)).settings()
    assert (settings.subnet, settings.bridge) == ("10.245.9.0/24", "aliasop9")
    ports = [settings.kubelet_port, settings.kubelet_healthz]
    assert [*ports, settings.proxy_healthz, settings.proxy_metrics] == [29998, 29996, 29995, 29994]
    assert (layout.realnode_home / "run" / "settings.env").read_text() == settings.env()


def test_kube_chains_and_the_rules_into_them_are_removed(layout: Layout) -> None:
    saved = "\n".join(
        [
            "*filter",
            ":INPUT ACCEPT [0:0]",
            ":KUBE-FIREWALL - [0:0]",
            '-A INPUT -m comment --comment "kubernetes firewall" -j KUBE-FIREWALL',
            "-A INPUT -j ACCEPT",
            "-A KUBE-FIREWALL -j DROP",
            "COMMIT",
        ]
    )
    commands = FakeCommands(
        lambda argv: (
            output(argv, saved) if argv[0] == "iptables-save" and "filter" in argv else None
        )
    )
    RealNode(layout, commands).remove_kube_chains()
    changes = [call for call in commands.calls if call[0] == "iptables"]
    assert changes == [
        [
            "iptables", "-t", "filter", "-D", "INPUT", "-m", "comment", "--comment",
            "kubernetes firewall", "-j", "KUBE-FIREWALL",
        ],
        ["iptables", "-t", "filter", "-F", "KUBE-FIREWALL"],
        ["iptables", "-t", "filter", "-X", "KUBE-FIREWALL"],
    ]  # fmt: skip
    assert not [call for call in commands.calls if call[0] == "ip6tables"]


# --- the real node's exit codes ---------------------------------------------------------------


class StandInNode(RealNode):
    """The real node with every part that would change this machine stood in for: `failure`
    names the part that fails and how."""

    failure: tuple[str, Exception] | None = None

    def part(self, name: str) -> None:
        if self.failure and self.failure[0] == name:
            raise self.failure[1]

    def prerequisites(self) -> None:
        self.part("prerequisites")

    def claim_host(self) -> None:
        pass

    def host_free(self) -> None:
        pass

    def healthy(self) -> bool:
        return False

    def settings(self) -> Settings:
        return SETTINGS

    def build_images(self) -> None:
        self.part("build_images")

    def ensure_bridge(self) -> None:
        self.part("ensure_bridge")

    def start_containerd(self) -> None:
        pass

    def import_image(self, name: str, archive: Path) -> None:
        pass

    def start_kubelet(self) -> None:
        self.part("start_kubelet")

    def start_kube_proxy(self) -> None:
        pass


def node(layout: Layout, failure: tuple[str, Exception] | None = None) -> StandInNode:
    stand_in = StandInNode(layout, FakeCommands(), host_owner=layout.cache / "host-owner")
    stand_in.failure = failure
    return stand_in


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (("start_kubelet", TimeoutError("node not Ready")), "could not start (logs: "),
        (("ensure_bridge", OSError("no ip")), "realnode up failed (no ip; logs: "),
        (("build_images", CannotRun("gcc could not build")), "gcc could not build"),
    ],
)
def test_a_failed_start_is_unavailable_until_an_up_succeeds(
    layout: Layout, failure: tuple[str, Exception], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert node(layout, failure).up() == UNAVAILABLE
    recorded = (layout.realnode_home / "unavailable").read_text()
    assert recorded.startswith(reason), recorded
    # The checks pass, the node does not run: unavailable, as up said, not down (1).
    capsys.readouterr()
    assert node(layout).status() == UNAVAILABLE
    assert reason in capsys.readouterr().out

    assert node(layout).up() == 0
    assert not (layout.realnode_home / "unavailable").exists()
    assert node(layout).status() == 1
    assert "not running or not Ready" in capsys.readouterr().out


def test_a_node_that_cannot_run_here_is_unavailable_but_not_failed(layout: Layout) -> None:
    """Without a failed start (the last up succeeded, or failed its checks and the machine has
    changed since), status says not running: the cluster's `up` starts it."""
    assert node(layout).up() == 0
    assert node(layout).status() == 1
    assert node(layout, ("prerequisites", CannotRun("missing containerd"))).up() == UNAVAILABLE
    assert (layout.realnode_home / "unavailable").read_text() == "missing containerd\n"
    assert not (layout.realnode_home / "failed").exists()
    assert node(layout).status() == 1
    assert node(layout, ("prerequisites", CannotRun("missing containerd"))).status() == UNAVAILABLE


def test_part_failures_are_part_failed(layout: Layout) -> None:
    with pytest.raises(PartFailed, match="node not Ready"):
        node(layout, ("start_kubelet", TimeoutError("node not Ready"))).start_parts()


# --- the control plane ------------------------------------------------------------------------


def test_a_leftover_node_lease_is_handed_over(layout: Layout) -> None:
    stopped = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    renewed = {"spec": {"renewTime": (stopped - timedelta(seconds=5)).isoformat()}}
    deleted: list[list[str]] = []

    def respond(argv: list[str]) -> Result | None:
        if "delete" in argv:
            deleted.append(argv)
        elif "lease" in argv and "-o" in argv:
            return output(argv, json.dumps(renewed))
        return None

    ControlPlane(layout, FakeCommands(respond)).take_over_node_lease(stopped.timestamp())
    assert len(deleted) == 1 and deleted[0][-3:-1] == ["lease", KWOK_NODE]

    # Renewed since the stop: the new kwok-controller has it already.
    renewed["spec"]["renewTime"] = (stopped + timedelta(seconds=5)).isoformat()
    ControlPlane(layout, FakeCommands(respond)).take_over_node_lease(stopped.timestamp())
    assert len(deleted) == 1


def test_a_cluster_that_does_not_start_is_deleted_with_its_logs_shown(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    layout.bin.mkdir(parents=True)
    for name in BINARIES:
        (layout.bin / name).write_text("#!/bin/sh\n")
        (layout.bin / name).chmod(0o755)

    def respond(argv: list[str]) -> Result | None:
        if "create" in argv:
            logs = layout.cluster_dir / "logs"
            logs.mkdir(parents=True)
            (logs / "kube-apiserver.log").write_text("etcd did not answer\n")
            return output(argv, "", code=1)
        return None

    commands = FakeCommands(respond)
    with pytest.raises(ClusterError, match="could not start cluster aliasop"):
        ControlPlane(layout, commands).up()
    assert "etcd did not answer" in capsys.readouterr().err
    assert not layout.cluster_dir.exists()
    kwokctl = [call[3:] for call in commands.calls if call[0].endswith("kwokctl")]
    assert kwokctl[-1][:2] == ["delete", "cluster"]
    # Created from the configuration written beside kwokctl's state.
    created = yaml.safe_load((layout.kwok_workdir / "aliasop.yaml").read_text())
    assert created == kwokctl_config(layout)


@pytest.mark.parametrize(("node_status", "healthy"), [(0, True), (UNAVAILABLE, True), (1, False)])
def test_a_cluster_without_its_real_node_is_healthy_where_it_is_unavailable(
    layout: Layout, node_status: int, healthy: bool
) -> None:
    class Healthy(ControlPlane):
        def status(self) -> bool:
            return True

    class Node(StandInNode):
        def status(self) -> int:
            return node_status

    control_plane = Healthy(layout, FakeCommands(), node=node(layout))
    assert cluster_status(control_plane, Node(layout, FakeCommands())) is healthy


def test_wait_for_returns_the_value_or_names_what_it_waited_for() -> None:
    values = iter([0, None, "ready"])
    assert local.wait_for(lambda: next(values), timeout=5, interval=0.01) == "ready"
    with pytest.raises(TimeoutError, match=r"timed out after 0\.05s waiting for the node; last: 0"):
        local.wait_for(lambda: 0, timeout=0.05, interval=0.01, message="the node")


def test_a_missing_command_exits_127_and_a_slow_one_124(tmp_path: Path) -> None:
    assert Commands().run([str(tmp_path / "nothing-here")]).returncode == 127
    slow = Commands().run(["sleep", "5"], timeout=0.2)
    assert slow.returncode == 124
    assert Commands().run(["sh", "-c", "echo $X_SEEN"], env={"X_SEEN": "yes"}).stdout == "yes\n"
    assert isinstance(slow, subprocess.CompletedProcess)
