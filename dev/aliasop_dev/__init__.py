"""aliasop's development tooling, kept out of the product package and its image.

`aliasop-dev demo [--down]` runs the narrated end-to-end demo on the test cluster (`make
demo`, `make demo-down`); `local` starts MLflow, the operator and serving commands as local
processes, and `bikes` is the small real model the demo, the tests and the benchmarks register.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aliasop-dev", description="aliasop development tools")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the end-to-end demo on the test cluster")
    demo.add_argument("--down", action="store_true", help="stop what the demo started")
    demo.add_argument(
        "--canary", action="store_true", help="then release version 2 again, as a canary"
    )
    args = parser.parse_args(argv)

    from aliasop_dev.demo import run_demo, stop_demo

    return stop_demo() if args.down else run_demo(canary=args.canary)
