"""`aliasop run | crd | demo`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aliasop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument("--tracking-uri", help="default MLflow server (env ALIASOP_TRACKING_URI)")
    run.add_argument("--serving-image", help="default serving image (env ALIASOP_SERVING_IMAGE)")
    run.add_argument(
        "--liveness", metavar="URL", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    run.add_argument(
        "--http-port",
        type=int,
        help="port of /metrics and /webhooks/mlflow (env ALIASOP_HTTP_PORT)",
    )

    commands.add_parser("crd", help="print the ModelDeployment CRD as YAML")

    demo = commands.add_parser("demo", help="run the end-to-end demo on the test cluster")
    demo.add_argument("--down", action="store_true", help="stop what the demo started")

    args = parser.parse_args(argv)
    if args.command == "crd":
        from aliasop.crd import render_crd

        sys.stdout.write(render_crd())
        return 0
    if args.command == "demo":
        from aliasop.demo import run_demo, stop_demo

        return stop_demo() if args.down else run_demo()
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    # Options override the environment, so Settings stays the one place config is read.
    for option, variable in (
        ("tracking_uri", "ALIASOP_TRACKING_URI"),
        ("serving_image", "ALIASOP_SERVING_IMAGE"),
        ("http_port", "ALIASOP_HTTP_PORT"),
    ):
        value = getattr(args, option)
        if value is not None:
            os.environ[variable] = str(value)

    # kopf imports the official Kubernetes client whenever it is installed (it is, next to the
    # tests), to recognise its objects and to log in through it. aliasop does neither, and the
    # import alone is 24 MiB resident. A None entry makes `import kubernetes` fail at once.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    import kopf

    from aliasop import handlers  # noqa: F401  (registers the handlers)
    from aliasop.runtime import build_runtime
    from aliasop.settings import load_settings

    settings = load_settings()
    kopf.configure(verbose=False, log_prefix=True)  # "[namespace/name] ..." on each object's lines
    kopf.run(
        standalone=True,  # one instance (manifests/operator.yaml): no kopf peering
        clusterwide=args.all_namespaces or not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(runtime=build_runtime(settings)),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
