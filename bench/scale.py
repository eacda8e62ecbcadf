"""Scale benchmark: N ModelDeployments following M models, on the test cluster, against a
real MLflow server behind a request-counting proxy. Writes docs/benchmarks.md.

For each N and each registry mode (`shared`: aliasop's watcher; `naive`: every resource
resolves on its own) it measures, in one run: time for all N to reach Ready after creation,
MLflow requests per poll interval, alias move -> pod template updated (by polling, and for
`shared` by webhook), and the operator's resident memory and CPU.

    make bench                       # N = 10, 100, 1000, on the test cluster
    PATH=<cluster bin>:$PATH .venv/bin/python bench/scale.py --sizes 10 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlflow
from aiohttp import ClientSession, web
from kubernetes import client, config, watch
from machine import describe
from mlflow import MlflowClient

from aliasop_dev import bikes, local

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks.md"
NAMESPACE = "bench"
INTERVAL = 10  # pollIntervalSeconds of every benchmark resource
SECRET = "bench-webhook-secret"
# docs/benchmarks.md from this heading on is written by hand and kept across runs.
ANALYSIS = "## Reading the numbers"
API_CONCURRENCY = 32  # the operator's default ALIASOP_API_CONCURRENCY


class CountingProxy:
    """An HTTP reverse proxy in front of MLflow that counts requests by path."""

    def __init__(self, target: str) -> None:
        self.target, self.counts = target, Counter[str]()
        self.port = local.free_port()
        self._loop = asyncio.new_event_loop()

    def start(self) -> CountingProxy:
        ready = threading.Event()

        async def forward(request: web.Request) -> web.Response:
            self.counts[request.path] += 1
            async with self._session.request(
                request.method,
                self.target + request.path_qs,
                data=await request.read(),
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            ) as upstream:
                return web.Response(
                    status=upstream.status,
                    body=await upstream.read(),
                    content_type=upstream.content_type,
                )

        async def serve() -> None:
            self._session = ClientSession()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", forward)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            ready.set()

        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop)
        ready.wait(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def registry_requests(self) -> int:
        return sum(
            n
            for path, n in self.counts.items()
            if "/registered-models/" in path or "/model-versions/" in path
        )


@dataclass
class Result:
    mode: str
    size: int
    models: int
    ready_seconds: float
    requests_per_interval: float
    polling: list[float]
    webhook: list[float]
    rss_mb: float
    peak_rss_mb: float
    cpu_seconds: float
    floor: list[float]


def make_room(core: client.CoreV1Api, pods: int) -> None:
    """Let the simulated nodes hold `pods` pods (one serving pod per resource); the real node,
    whose kubelet reports its own capacity, is left alone."""
    for node in core.list_node(label_selector="type=kwok").items:
        room = {"pods": str(pods)}
        core.patch_node_status(
            node.metadata.name, {"status": {"capacity": room, "allocatable": room}}
        )


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a | n/a | n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.2f} | {p95:.2f} | {ordered[-1]:.2f}"


def proc_stats(pid: int) -> tuple[float, float, float]:
    """Resident and peak resident MiB, and CPU seconds, of the operator process."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024, cpu


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


class Bench:
    def __init__(self, kubeconfig: str, tracking: str, proxy: CountingProxy) -> None:
        api = config.new_client_from_config(config_file=kubeconfig)
        self.kubeconfig, self.tracking, self.proxy = kubeconfig, tracking, proxy
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.mlflow = MlflowClient(tracking_uri=tracking)

    def register(self, models: int) -> list[str]:
        """M models with two versions each, sharing one logged scikit-learn model."""
        first = bikes.train_and_register(self.tracking, f"bench-{uuid.uuid4().hex[:6]}")
        source = f"runs:/{first.run_id}/model"
        mlflow.set_tracking_uri(self.tracking)
        names = [first.name] + [f"bench-{uuid.uuid4().hex[:6]}" for _ in range(models - 1)]
        for name in names:
            for _ in range(2 if name != first.name else 1):
                mlflow.register_model(source, name)
            self.mlflow.set_registered_model_alias(name, "champion", "1")
        return names

    def ready_count(self, version: str | None = None) -> int:
        """ModelDeployments Ready (and serving `version`, if given)."""
        items = self.custom.list_namespaced_custom_object(
            "aliasop.io", "v1alpha1", NAMESPACE, "modeldeployments"
        )["items"]
        statuses = [i.get("status") or {} for i in items]
        return sum(
            s.get("phase") == "Ready" and version in (None, s.get("servingVersion"))
            for s in statuses
        )

    def settle(self, version: str, size: int) -> None:
        """Wait for every rollout to `version` to finish, so that the next measurement
        starts from a steady cluster."""
        wait(lambda: self.ready_count(version) == size, 900, f"{size} serving {version}")

    def direct_patch(self, size: int, version: str) -> list[float]:
        """The floor under the latency columns: no operator, a client applies the version
        label to every Deployment's template itself, as many at once as the operator's
        API concurrency; seconds until each template shows it."""
        template = {"metadata": {"labels": {"aliasop.io/model-version": version}}}

        def patch(name: str) -> None:
            response = self.apps.patch_namespaced_deployment(
                name,
                NAMESPACE,
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name},
                    "spec": {"template": template},
                },
                field_manager="bench-floor",
                force=True,
                _content_type="application/apply-patch+yaml",
                _preload_content=False,
            )
            response.drain_conn()  # read it, or the pooled connection is out of step
            response.release_conn()

        def patch_all() -> None:
            with ThreadPoolExecutor(API_CONCURRENCY) as pool:
                list(pool.map(patch, (f"m{i}" for i in range(size))))

        return self.time_templates(patch_all, version, size)

    def move_and_time(self, models: list[str], version: str, size: int) -> list[float]:
        """Move every model's @champion to `version`; seconds until each template shows it."""

        def move() -> None:
            for name in models:
                self.mlflow.set_registered_model_alias(name, "champion", version)

        return self.time_templates(move, version, size)

    def time_templates(self, act: Callable[[], None], version: str, size: int) -> list[float]:
        """Run `act`; seconds from its start until each Deployment's template shows
        `version`."""
        seen: dict[str, float] = {}
        stream = watch.Watch()
        start_rv = self.apps.list_namespaced_deployment(NAMESPACE).metadata.resource_version

        def observe() -> None:
            for event in stream.stream(
                self.apps.list_namespaced_deployment,
                NAMESPACE,
                resource_version=start_rv,
                timeout_seconds=INTERVAL * 6,
            ):
                deployment = event["object"]
                labels = deployment.spec.template.metadata.labels
                if labels.get("aliasop.io/model-version") == version:
                    seen.setdefault(deployment.metadata.name, time.monotonic())
                if len(seen) == size:
                    stream.stop()

        watcher = threading.Thread(target=observe, daemon=True)
        watcher.start()
        started = time.monotonic()
        act()
        watcher.join(INTERVAL * 6 + 5)
        return [t - started for t in seen.values()]

    def run(self, mode: str, size: int, models: list[str], workdir: Path) -> Result:
        make_room(self.core, size + 200)
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        operator = local.operator(
            workdir / f"operator-{mode}-{size}.log",
            self.kubeconfig,
            self.proxy.url,
            local.free_port(),
            webhook_secret=SECRET,
        )
        if mode == "naive":  # the same operator with bench/naive_operator.py's resolver
            operator.args[:1] = [sys.executable, str(Path(__file__).with_name("naive_operator.py"))]
        operator.start()
        assert operator.process is not None
        pid = operator.process.pid
        try:
            started = time.monotonic()
            for i in range(size):
                self.custom.create_namespaced_custom_object(
                    "aliasop.io",
                    "v1alpha1",
                    NAMESPACE,
                    "modeldeployments",
                    {
                        "apiVersion": "aliasop.io/v1alpha1",
                        "kind": "ModelDeployment",
                        "metadata": {"name": f"m{i}"},
                        "spec": {
                            "model": f"models:/{models[i % len(models)]}@champion",
                            "replicas": 1,
                            "pollIntervalSeconds": INTERVAL,
                        },
                    },
                )
            wait(lambda: self.ready_count() == size, 900, f"{size} Ready")
            ready_seconds = time.monotonic() - started

            before = self.proxy.registry_requests()
            time.sleep(3 * INTERVAL)  # an idle stretch: only the polling itself
            per_interval = (self.proxy.registry_requests() - before) / 3

            polling = self.move_and_time(models, "2", size)
            self.settle("2", size)
            webhook: list[float] = []
            if mode == "shared":
                hook = self.mlflow.create_webhook(
                    name=f"bench-{uuid.uuid4().hex[:6]}",
                    url=f"http://127.0.0.1:{operator.env['ALIASOP_HTTP_PORT']}/webhooks/mlflow",
                    events=["model_version_alias.created"],
                    secret=SECRET,
                )
                time.sleep(2)  # MLflow caches its webhook list for MLFLOW_WEBHOOK_CACHE_TTL=1s
                webhook = self.move_and_time(models, "1", size)
                self.mlflow.delete_webhook(hook.webhook_id)
            else:
                self.move_and_time(models, "1", size)
            self.settle("1", size)
            rss, peak, cpu = proc_stats(pid)
            floor: list[float] = []
            if mode == "shared":
                operator.stop()  # or it would put its own version back
                floor = self.direct_patch(size, "floor")
            return Result(
                mode,
                size,
                len(models),
                ready_seconds,
                per_interval,
                polling,
                webhook,
                rss,
                peak,
                cpu,
                floor,
            )
        finally:
            self.core.delete_namespace(NAMESPACE)
            wait(
                lambda: (
                    NAMESPACE not in {n.metadata.name for n in self.core.list_namespace().items}
                ),
                900,
                "namespace deletion",
            )
            operator.stop()


def report(results: list[Result]) -> str:
    rows = [
        f"| {r.size} | {r.models} | {r.mode} | {r.ready_seconds:.1f} | "
        f"{r.requests_per_interval:.1f} | {percentiles(r.polling)} | {percentiles(r.webhook)} | "
        f"{percentiles(r.floor)} | {r.rss_mb:.0f} ({r.peak_rss_mb:.0f}) | {r.cpu_seconds:.1f} |"
        for r in results
    ]
    return "\n".join(
        [
            "# Benchmarks",
            "",
            f"`make bench` (bench/scale.py), {time.strftime('%Y-%m-%d')}, on {describe()}; "
            "the Kubernetes test cluster (kwok) runs on the same machine.",
            "",
            f"N ModelDeployments (1 replica each, pollIntervalSeconds={INTERVAL}) follow M "
            "models on a real MLflow server (sqlite) behind a counting proxy. *Ready* is the "
            "time from the first create to all N `Ready`. *Requests/interval* counts MLflow "
            "registry requests during three idle intervals. The latency columns time every "
            "model's alias move to each Deployment's pod template showing the new version "
            "(p50 | p95 | max, seconds), by polling and (shared mode only) by MLflow webhook; "
            "each move starts once the previous one has rolled out everywhere. *Direct* is "
            "the floor under those columns on this machine: with the operator stopped, a "
            f"client applies a new template label to all N Deployments itself, {API_CONCURRENCY} "
            "at a time. Memory is the operator's resident set at the end (peak), CPU its "
            "user+system seconds over the run.",
            "",
            "| N | M | mode | Ready (s) | requests/interval | polling p50 | p95 | max | "
            "webhook p50 | p95 | max | direct p50 | p95 | max | RSS MiB (peak) | CPU s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Targets: webhook p95 < 1 s; polling p95 < interval + 1 s = {INTERVAL + 1} s; "
            "requests per interval = M in shared mode; < 200 MB resident at N = 1000.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["shared", "naive"])
    args = parser.parse_args()
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".cache/aliasop/kubeconfig")
    workdir = Path(tempfile.mkdtemp(prefix="aliasop-scale-"))
    for kubectl_args in (
        ["apply", "--server-side", "-f", str(ROOT / "crds")],
        ["wait", "--for=condition=Established", "crd/modeldeployments.aliasop.io"],
    ):
        subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *kubectl_args], check=True)
    port = local.free_port()
    server = local.mlflow_server(workdir / "mlflow", port).start()
    results: list[Result] = []
    previous = OUT.read_text() if OUT.exists() else ""
    analysis = previous[previous.index(ANALYSIS) :] if ANALYSIS in previous else ""
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/health", timeout=120)
        proxy = CountingProxy(f"http://127.0.0.1:{port}").start()
        bench = Bench(kubeconfig, f"http://127.0.0.1:{port}", proxy)
        models = bench.register(args.models)
        for size in args.sizes:
            for mode in args.modes:
                print(f"[bench] N={size} mode={mode} ...", flush=True)
                results.append(bench.run(mode, size, models, workdir))
                # As it goes (a long run may be cut short), keeping the written analysis.
                OUT.write_text(report(results) + analysis)
                print(report(results[-1:]).splitlines()[-3], flush=True)
    finally:
        server.stop()
    print(OUT.read_text())


if __name__ == "__main__":
    main()
