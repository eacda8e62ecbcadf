"""`kubectl aliasop`: see and steer ModelDeployments day to day (docs/day2.md).

A kubectl plugin (the console script `kubectl-aliasop`) with the user's own kubeconfig, and for
`undo` the user's own MLflow credentials. What it writes is the documented contract, which a
GitOps repository can write as well: annotations set to the version they act on, and
spec.paused.

Exit codes: 0 done; 1 the API server or MLflow refused or failed; 2 bad usage; 3 no such
resource; 4 nothing to act on (no canary to promote, no version to undo to, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from aliasop.builders import get_selector
from aliasop.domain import Owner
from aliasop.models import (
    ABORT_ANNOTATION,
    GROUP,
    PLURAL,
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    RETRY_ANNOTATION,
    VERSION,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RegistryProblem,
)
from aliasop.plugin_view import ResourceView, build_view, render_list, render_tree, undo_target

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_NOTHING_TO_DO = 4
_TIMEOUT_SECONDS = 15.0
WATCH_INTERVAL_SECONDS = 2.0


class PluginError(Exception):
    """Ends the command: `message` says what went wrong and what to do."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Kube(Protocol):
    """The few API calls the plugin makes (KubeApi; unit tests pass a fake)."""

    def get(self, namespace: str, name: str) -> dict[str, Any]: ...

    def resources(self, namespace: str | None) -> list[dict[str, Any]]: ...

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def merge_patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...

    @property
    def default_namespace(self) -> str: ...


class AliasMover(Protocol):
    """Moves an alias in MLflow (MlflowAliasMover; unit tests pass a fake)."""

    def move(self, tracking_uri: str, model: str, alias: str, version: str) -> None:
        """Raises PluginError when MLflow refuses, or the alias does not point at `version`
        afterwards."""


class KubeApi:
    """The API server, as the user's kubeconfig (or the pod's ServiceAccount) reaches it."""

    def __init__(self) -> None:
        import kopf  # its logins read kubeconfigs as kubectl does

        login_logger, settings = logging.getLogger("aliasop.kubectl"), kopf.OperatorSettings()
        try:
            try:  # the official client, where installed, also runs kubeconfigs' exec plugins
                import kubernetes  # noqa: F401

                info = kopf.login_via_client(logger=login_logger, settings=settings)
            except ImportError:
                info = kopf.login_with_kubeconfig(logger=login_logger, settings=settings)
        except Exception as exc:  # any client's own error: no kubeconfig, a bad context ...
            raise PluginError(
                f"cannot log in to Kubernetes ({exc}): set KUBECONFIG, or a current context in "
                "~/.kube/config, as for kubectl"
            ) from None
        if info is None:
            raise PluginError(
                "no kubeconfig: set KUBECONFIG or create ~/.kube/config (as for kubectl)"
            )
        self._namespace = info.default_namespace or "default"
        self._http = httpx.Client(
            base_url=info.server.rstrip("/"),
            headers={**info.as_http_headers(), "User-Agent": "kubectl-aliasop"},
            verify=info.as_ssl_context(),
            timeout=_TIMEOUT_SECONDS,
        )

    @property
    def default_namespace(self) -> str:
        return self._namespace

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PluginError(
                f"the API server at {self._http.base_url} did not answer ({exc}): is the "
                "kubeconfig's current context the cluster you mean?"
            ) from None
        if response.status_code == 404:
            raise PluginError(_api_message(response), EXIT_NOT_FOUND)
        if response.status_code in (401, 403):
            raise PluginError(
                f"{_api_message(response)}: your kubeconfig's user may not do this "
                f"(needs {method} on {PLURAL}.{GROUP})"
            )
        if response.status_code >= 400:
            raise PluginError(_api_message(response))
        answer: dict[str, Any] = response.json()
        return answer

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call("GET", f"{_resources(namespace)}/{name}")

    def resources(self, namespace: str | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call("GET", _resources(namespace))["items"]
        return items

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{namespace}/pods"
        try:
            items: list[dict[str, Any]] = self._call(
                "GET", path, params={"labelSelector": selector}
            )["items"]
        except PluginError:  # may read the resource, not its pods: shown as "no pods read"
            return []
        return items

    def merge_patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self._call(
            "PATCH",
            f"{_resources(namespace)}/{name}",
            content=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )


def _resources(namespace: str | None) -> str:
    base = f"/apis/{GROUP}/{VERSION}"
    return f"{base}/namespaces/{namespace}/{PLURAL}" if namespace else f"{base}/{PLURAL}"


def _api_message(response: httpx.Response) -> str:
    try:
        return f"HTTP {response.status_code}: {response.json()['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


class MlflowAliasMover:
    """Moves aliases with the user's own MLflow credentials (MLflow's MLFLOW_TRACKING_*
    variables), so that the registry records who moved it."""

    def move(self, tracking_uri: str, model: str, alias: str, version: str) -> None:
        from aliasop.registry import MlflowRegistry
        from aliasop.settings import RegistryAccess, RegistryWriter

        async def move() -> dict[str, str]:
            access = RegistryAccess()
            writer = RegistryWriter(
                token=access.token, username=access.username, password=access.password
            )
            registry = MlflowRegistry(
                timeout_seconds=_TIMEOUT_SECONDS,
                concurrency=1,
                access=access,
                credential_origins=[tracking_uri],
                writer=writer,
            )
            try:
                await registry.version_tags(tracking_uri, model, version)  # it exists
                await registry.set_alias(tracking_uri, model, alias, version)
                return await registry.aliases(tracking_uri, model)
            finally:
                await registry.aclose()

        try:
            aliases = asyncio.run(move())
        except RegistryProblem as problem:
            raise PluginError(
                f"MLflow did not move @{alias}: {problem.message} (credentials: "
                "MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and _PASSWORD)"
            ) from None
        if aliases.get(alias) != version:
            raise PluginError(
                f"MLflow answered, but @{alias} points at {aliases.get(alias)}, not {version}"
            )


@dataclass
class Plugin:
    kube: Kube
    mover: AliasMover
    out: Callable[[str], object]
    clock: Callable[[], datetime]

    def view(self, resource: Mapping[str, Any]) -> ResourceView:
        meta = resource["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""))
        selector = get_selector(owner)
        return build_view(resource, self.kube.pods(meta["namespace"], selector))

    def get(self, namespace: str, name: str, output: str) -> int:
        view = self.view(self.kube.get(namespace, name))
        if output == "json":
            self.out(json.dumps(view.to_json(), indent=2) + "\n")
        else:
            self.out(render_tree(view, self.clock()))
        return EXIT_OK

    def list(self, namespace: str | None, output: str) -> int:
        views = [self.view(item) for item in self.kube.resources(namespace)]
        views.sort(key=lambda view: (view.namespace, view.name))
        if output == "json":
            self.out(json.dumps([view.to_json() for view in views], indent=2) + "\n")
        elif not views:
            where = f"namespace {namespace}" if namespace else "any namespace"
            self.out(f"No ModelDeployments in {where}.\n")
        else:
            self.out(render_list(views))
        return EXIT_OK

    def watch(self, draw: Callable[[], str], frames: Iterator[object]) -> int:
        """Redraw whenever what `draw` renders changes, once per frame (until interrupted)."""
        shown = None
        for _ in frames:
            frame = draw()
            if frame != shown:
                self.out("\x1b[H\x1b[2J" + frame)  # clear the terminal, as `watch` does
                shown = frame
        return EXIT_OK

    def annotate(self, namespace: str, name: str, action: str, full: bool = False) -> int:
        """promote | abort | retry: the annotation the operator honours, set to the version
        it acts on."""
        resource = self.kube.get(namespace, name)
        status = ModelDeploymentStatus.model_validate(resource.get("status") or {})
        version, annotation, what = _annotation_for(status, action, full, name)
        self.kube.merge_patch(namespace, name, {"metadata": {"annotations": {annotation: version}}})
        self.out(f"{namespace}/{name}: {what.format(version)} ({annotation}={version})\n")
        return EXIT_OK

    def set_paused(self, namespace: str, name: str, paused: bool) -> int:
        self.kube.get(namespace, name)  # a missing resource says so, not a merge's 404
        self.kube.merge_patch(namespace, name, {"spec": {"paused": paused}})
        state = "paused: alias moves are not rolled out" if paused else "resumed"
        self.out(f"{namespace}/{name}: {state} (spec.paused={str(paused).lower()})\n")
        return EXIT_OK

    def undo(self, namespace: str, name: str, to_version: str | None) -> int:
        resource = self.kube.get(namespace, name)
        spec = ModelDeploymentSpec.model_validate(resource["spec"])
        status = ModelDeploymentStatus.model_validate(resource.get("status") or {})
        version = to_version or undo_target(status)
        if version is None:
            raise PluginError(
                f"{namespace}/{name} has no earlier version that rolled out in its history: "
                "name one with --to-version",
                EXIT_NOTHING_TO_DO,
            )
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or spec.tracking_uri
        if not tracking_uri:
            raise PluginError(
                f"{namespace}/{name} names no trackingUri (it uses the operator's default): set "
                "MLFLOW_TRACKING_URI to the MLflow server"
            )
        uri = spec.model_uri
        self.mover.move(tracking_uri, uri.name, uri.alias, version)
        self.out(
            f"{namespace}/{name}: moved models:/{uri.name}@{uri.alias} to version {version} in "
            f"MLflow at {tracking_uri}; the operator rolls it out at its next poll\n"
        )
        return EXIT_OK


def _annotation_for(
    status: ModelDeploymentStatus, action: str, full: bool, name: str
) -> tuple[str, str, str]:
    """(version, annotation, what is done: a format of the version) of promote, abort or
    retry; PluginError when there is nothing to act on."""
    rolling = status.canary.version if status.canary is not None else None
    if rolling is None and status.target_version not in (None, status.serving_version):
        rolling = status.target_version  # a rolling update under way
    if action == "promote":
        if status.canary is None:
            raise PluginError(
                f"{name} has no canary in flight to promote (a RollingUpdate needs none)",
                EXIT_NOTHING_TO_DO,
            )
        if full:
            return (
                status.canary.version,
                PROMOTE_FULL_ANNOTATION,
                "promoting version {} fully, skipping the remaining steps",
            )
        return status.canary.version, PROMOTE_ANNOTATION, "promoting version {} past its pause"
    if action == "abort":
        if rolling is None:
            raise PluginError(f"{name} has no rollout in flight to abort", EXIT_NOTHING_TO_DO)
        return rolling, ABORT_ANNOTATION, "aborting the rollout of version {}"
    failed = status.failed_version
    if failed is None:
        raise PluginError(f"{name} has no failed or aborted version to retry", EXIT_NOTHING_TO_DO)
    return failed, RETRY_ANNOTATION, "retrying version {}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl aliasop",
        description="See and steer aliasop ModelDeployments (docs/day2.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str, named: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_)
        if named:
            sub.add_argument("name", help="the ModelDeployment")
        sub.add_argument("-n", "--namespace", help="default: the kubeconfig context's")
        return sub

    get = command("get", "show one resource as a tree")
    get.add_argument("-w", "--watch", action="store_true", help="redraw as it changes")
    listing = command("list", "one line per resource", named=False)
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    for sub in (get, listing):
        sub.add_argument("-o", "--output", choices=("tree", "json"), default="tree")
    promote = command("promote", "end the canary's pause (--full: skip the remaining steps)")
    promote.add_argument("--full", action="store_true", help="skip every remaining step")
    command("abort", "stop the rollout and return to the last good version (alias untouched)")
    command("retry", "run the failed or aborted version again")
    command("pause", "stop rolling out alias moves (spec.paused: true)")
    command("resume", "roll out alias moves again (spec.paused: false)")
    undo = command("undo", "move the alias back in MLflow, with your MLflow credentials")
    undo.add_argument("--to-version", metavar="V", help="default: the last earlier good version")
    return parser


def main(
    argv: Sequence[str] | None = None,
    kube: Kube | None = None,
    mover: AliasMover | None = None,
) -> int:
    args = _parser().parse_args(argv)
    try:
        plugin = Plugin(
            kube=kube or KubeApi(),
            mover=mover or MlflowAliasMover(),
            out=_write,
            clock=lambda: datetime.now(UTC),
        )
        namespace = args.namespace or plugin.kube.default_namespace
        return _dispatch(plugin, args, namespace)
    except PluginError as error:
        sys.stderr.write(f"error: {error}\n")
        return error.exit_code
    except KeyboardInterrupt:
        return EXIT_OK


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _dispatch(plugin: Plugin, args: argparse.Namespace, namespace: str) -> int:
    name = getattr(args, "name", "")
    match args.command:
        case "get" if args.watch:
            now = plugin.clock

            def draw() -> str:
                view = plugin.view(plugin.kube.get(namespace, name))
                if args.output == "json":
                    return json.dumps(view.to_json(), indent=2) + "\n"
                return render_tree(view, now()) + f"\n(every {WATCH_INTERVAL_SECONDS:.0f}s)\n"

            return plugin.watch(draw, _ticks(WATCH_INTERVAL_SECONDS))
        case "get":
            return plugin.get(namespace, name, args.output)
        case "list":
            return plugin.list(None if args.all_namespaces else namespace, args.output)
        case "promote":
            return plugin.annotate(namespace, name, "promote", full=args.full)
        case "abort" | "retry":
            return plugin.annotate(namespace, name, args.command)
        case "pause" | "resume":
            return plugin.set_paused(namespace, name, args.command == "pause")
        case "undo":
            return plugin.undo(namespace, name, args.to_version)
    raise PluginError(f"unknown command {args.command}", EXIT_USAGE)


def _ticks(interval: float) -> Iterator[None]:
    while True:
        yield None
        time.sleep(interval)


if __name__ == "__main__":
    raise SystemExit(main())
