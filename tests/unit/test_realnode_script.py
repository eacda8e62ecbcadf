"""tests/cluster/realnode.sh's exit codes when a start fails: its functions run in bash with a
temporary cache, and the parts that would touch this machine (checks, containerd, the kubelet...)
replaced by stand-ins."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support import REPO

pytestmark = pytest.mark.timeout(60)

SCRIPT = REPO / "tests" / "cluster" / "realnode.sh"
# Everything the parts below replace does something to this machine.
STAND_INS = """
prerequisites() { :; }
claim_host() { :; }
host_free() { :; }
healthy() { return 1; }
settings() { :; }
build_images() { :; }
ensure_bridge() { :; }
show_logs() { :; }
start_containerd() { :; }
import_image() { :; }
start_kubelet() { :; }
start_kube_proxy() { :; }
"""


@pytest.fixture
def realnode(tmp_path: Path) -> Path:
    """realnode.sh without its command dispatch, beside the versions.env it sources."""
    text = SCRIPT.read_text()
    library = tmp_path / "lib" / "realnode.sh"
    library.parent.mkdir()
    library.write_text(text[: text.index('\ncase "${1:-}" in')])
    (library.parent / "versions.env").write_text((SCRIPT.parent / "versions.env").read_text())
    return library


def run(realnode: Path, cache: Path, script: str) -> subprocess.CompletedProcess[str]:
    """`script` after realnode.sh's functions and the stand-ins, with cache `cache`."""
    return subprocess.run(
        ["bash", "-c", f'source "$0"\n{STAND_INS}\n{script}', str(realnode)],
        env={"PATH": "/usr/bin:/bin", "ALIASOP_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("start_kubelet() { return 1; }", "could not start (logs: "),
        # An unexpected error, under set -e.
        ("ensure_bridge() { false; }", "realnode.sh up failed (exit 1; logs: "),
        ('build_images() { cannot "gcc could not build"; }', "gcc could not build"),
    ],
)
def test_a_failed_start_is_unavailable_until_an_up_succeeds(
    realnode: Path, tmp_path: Path, failure: str, reason: str
) -> None:
    cache = tmp_path / "cache"
    up = run(realnode, cache, f"{failure}\nup")
    assert up.returncode == 3, up.stderr
    recorded = (cache / "realnode" / "unavailable").read_text()
    assert recorded.startswith(reason), recorded
    # The checks pass, the node does not run: unavailable (3), as up said, not down (1).
    status = run(realnode, cache, "status")
    assert status.returncode == 3, status.stdout + status.stderr
    assert reason in status.stdout

    assert run(realnode, cache, "up").returncode == 0
    assert not (cache / "realnode" / "unavailable").exists()
    status = run(realnode, cache, "status")
    assert status.returncode == 1, status.stdout
    assert "not running or not Ready" in status.stdout


def test_a_node_that_stopped_is_not_running(realnode: Path, tmp_path: Path) -> None:
    """Without a failed start (the last up succeeded, or failed its checks and the machine has
    changed since), status says not running: `cluster.sh up` starts it."""
    cache = tmp_path / "cache"
    assert run(realnode, cache, "up").returncode == 0
    assert run(realnode, cache, "status").returncode == 1
    up = run(realnode, cache, 'prerequisites() { cannot "missing containerd"; }\nup')
    assert up.returncode == 3
    status = run(realnode, cache, "status")
    assert status.returncode == 1, status.stdout
