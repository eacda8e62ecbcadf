"""`python -m aliasop_dev.cluster up|down|status`: the whole test cluster.

up      start the control plane, or reuse a healthy one, or repair a stopped or broken one
        (one made with another configuration is recreated); then the real node: where it
        cannot run or does not start, the cluster runs without it and says why (the reason
        is kept in $ALIASOP_CACHE/realnode/unavailable). Exit 1 when the control plane
        cannot start (nothing is left running).
down    delete the cluster and the real node; no process of them is left running
status  exit 0 when the API server answers, the kwok node is Ready, the cluster was made
        with this configuration, and the real node is Ready, cannot run here, or did not
        start at the last `up`; 1 otherwise
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aliasop_dev.cluster import ClusterError, Layout
from aliasop_dev.cluster.controlplane import ControlPlane, log
from aliasop_dev.cluster.realnode import UNAVAILABLE, RealNode


def up(control_plane: ControlPlane, node: RealNode) -> None:
    control_plane.up()
    # The real node; the cluster runs without it where it cannot run or does not start, saying
    # why (tests that need it skip, or fail under ALIASOP_REQUIRE_REAL_NODE=1).
    try:
        code = node.up()
    except ClusterError as error:
        print(f"[realnode] error: {error}", file=sys.stderr)
        code = 1
    if code != 0:
        reason = (
            node.unavailable.read_text().strip()
            if node.unavailable.exists()
            else f"the real node's up exited {code}"
        )
        log(f"the cluster runs without its real node: {reason}")


def status(control_plane: ControlPlane, node: RealNode) -> bool:
    # The real node Ready, or unavailable (it cannot run on this machine, or the last `up`
    # could not start it): either way a healthy cluster, which the tests reuse rather than
    # start and stop.
    return control_plane.status() and node.status() in (0, UNAVAILABLE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aliasop_dev.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    layout = Layout.from_environment()
    node = RealNode(layout)
    control_plane = ControlPlane(layout, node=node)
    try:
        if args.command == "up":
            up(control_plane, node)
        elif args.command == "down":
            control_plane.down()
        else:
            return 0 if status(control_plane, node) else 1
    except (ClusterError, TimeoutError) as error:
        print(f"[cluster] error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
