"""`aliasop run | crd`."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from aliasop.settings import LogFormat, LogLevel

if TYPE_CHECKING:
    from aliasop.runtime import ResolverFactory

# `aliasop run` options that are settings: option name -> Settings field.
_SETTING_OPTIONS = (
    "tracking_uri",
    "serving_image",
    "http_port",
    "leader_elect",
    "leader_elect_namespace",
    "watch_label_selector",
    "log_format",
    "log_level",
)


def main(argv: Sequence[str] | None = None, make_resolver: ResolverFactory | None = None) -> int:
    """`make_resolver` replaces the registry watcher (the benchmark's naive mode)."""
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

    run.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        help="one of several replicas: only the holder of the Lease writes "
        "(env ALIASOP_LEADER_ELECT)",
    )
    run.add_argument(
        "--leader-elect-namespace",
        help="namespace of the Lease; default: the pod's, else `default` "
        "(env ALIASOP_LEADER_ELECT_NAMESPACE)",
    )
    run.add_argument(
        "--watch-label-selector",
        metavar="SELECTOR",
        help="follow only the ModelDeployments this label selector picks, e.g. "
        "aliasop.io/shard=a (env ALIASOP_WATCH_LABEL_SELECTOR)",
    )

    run.add_argument(
        "--log-format",
        choices=[f.value for f in LogFormat],
        help="text: one line per record; json: one object per line, the resource under "
        "`object` (env ALIASOP_LOG_FORMAT)",
    )
    run.add_argument(
        "--log-level",
        choices=[level.value for level in LogLevel],
        type=str.upper,
        help="least severe records logged (env ALIASOP_LOG_LEVEL)",
    )

    commands.add_parser("crd", help="print the ModelDeployment CRD as YAML")

    args = parser.parse_args(argv)
    if args.command == "crd":
        from aliasop.crd import render_crd

        sys.stdout.write(render_crd())
        return 0
    return _run(args, make_resolver)


def _run(args: argparse.Namespace, make_resolver: ResolverFactory | None) -> int:
    # kopf imports the official Kubernetes client whenever it is installed (it is, next to the
    # tests), to recognise its objects and to log in through it. aliasop does neither, and the
    # import alone is 24 MiB resident. A None entry makes `import kubernetes` fail at once.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    import kopf
    from kopf._core.engines.peering import Identity  # kopf.run's type, not re-exported

    from aliasop import handlers  # noqa: F401  (registers the handlers)
    from aliasop.runtime import build_runtime
    from aliasop.settings import load_settings

    options = {name: getattr(args, name) for name in _SETTING_OPTIONS}
    settings = load_settings(
        **{name: value for name, value in options.items() if value is not None}
    )
    runtime = build_runtime(settings, make_resolver)
    configure_logging(kopf, settings.log_format, settings.log_level)
    kopf.run(
        standalone=True,  # no kopf peering: replicas share the work through a Lease
        # kopf's own id (its peering's only): its default starts with the user's name, which a
        # UID without a passwd entry has none of (KeyError), as the image's 10001 in a pod.
        identity=Identity(socket.gethostname()),
        clusterwide=args.all_namespaces or not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(runtime=runtime),
    )
    return 0


def configure_logging(kopf: ModuleType, log_format: LogFormat, level: LogLevel) -> None:
    """Text: "[namespace/name] ..." on each object's lines; JSON: one object per record, with
    the resource's namespace and name under `object`."""
    if log_format is LogFormat.JSON:
        kopf.configure(log_format=kopf.LogFormat.JSON, log_prefix=False, log_refkey="object")
    else:
        kopf.configure(log_prefix=True)
    logging.getLogger().setLevel(level.value)


if __name__ == "__main__":
    raise SystemExit(main())
