"""High-availability benchmark, on the test cluster with a real MLflow server: how long the
registry goes unfollowed when the leader dies, and what a shard keeps in memory. Writes its
section of docs/benchmarks.md.

Failover: two replicas with the shipped Lease timings (15 s lease, 10 s renew deadline, 2 s
retry). Each round kills the leader (SIGKILL, or SIGTERM as a rolling update does), moves
the alias at that moment, and times (a) until the standby holds the Lease and (b) until the
Deployment's pod template pins the new version; the dead replica then comes back as the
standby.

Shards: N ModelDeployments, half in shard `a` and half in shard `b`; the resident memory of
an operator that follows none of them, shard `a`, and all of them.

    make bench-ha
    PATH=<cluster bin>:$PATH .venv/bin/python bench/ha.py --parts shards --size 1000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config
from machine import describe
from scale import make_room

from aliasop.sharding import lease_name
from aliasop_dev import bikes, local

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks.md"
FAILOVER = "## Failover (bench/ha.py)"
SHARDS = "## Shards (bench/ha.py)"
LEASE_NAMESPACE = "default"
SHARD_LABEL = "aliasop.io/shard"


def wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Bench:
    def __init__(self, kubeconfig: str, tracking: str, workdir: Path) -> None:
        api = config.new_client_from_config(config_file=kubeconfig)
        self.kubeconfig, self.tracking, self.workdir = kubeconfig, tracking, workdir
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.coordination = client.CoordinationV1Api(api)

    def namespace(self) -> str:
        name = f"bench-ha-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def operator(self, identity: str, selector: str) -> local.LocalProcess:
        health = local.free_port()
        process = local.operator(
            self.workdir / f"{identity}.log", self.kubeconfig, self.tracking, health
        )
        process.env.update(
            ALIASOP_LEADER_ELECT="true",
            ALIASOP_LEADER_ELECT_NAMESPACE=LEASE_NAMESPACE,
            ALIASOP_LEADER_ELECT_IDENTITY=identity,
            ALIASOP_WATCH_LABEL_SELECTOR=selector,
            ALIASOP_STATUS_REFRESH_SECONDS="300",
        )
        process.start()
        process.wait_ready(f"http://127.0.0.1:{health}/healthz", timeout=120)
        return process

    def holder(self, lease: str) -> str | None:
        try:
            found = self.coordination.read_namespaced_lease(lease, LEASE_NAMESPACE)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        holder: str | None = found.spec.holder_identity
        return holder

    def create(self, namespace: str, name: str, model: str, shard: str) -> None:
        body = {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace, "labels": {SHARD_LABEL: shard}},
            "spec": {"model": f"models:/{model}@champion", "pollIntervalSeconds": 10},
        }
        self.custom.create_namespaced_custom_object(
            "aliasop.io", "v1alpha1", namespace, "modeldeployments", body
        )

    def template_version(self, namespace: str, name: str) -> str | None:
        try:
            deployment = self.apps.read_namespaced_deployment(name, namespace)
        except client.ApiException:
            return None
        labels: dict[str, str] = deployment.spec.template.metadata.labels
        return labels.get("aliasop.io/model-version")

    def failover(self, kills: int, terms: int) -> dict[str, list[float]]:
        """Seconds until the standby leads, and until the move shows, per kind of stop."""
        namespace, shard = self.namespace(), f"ha-{uuid.uuid4().hex[:6]}"
        selector = f"{SHARD_LABEL}={shard}"
        lease = lease_name(selector)
        model = bikes.train_and_register(self.tracking, f"ha-{uuid.uuid4().hex[:6]}")
        bikes.train_and_register(self.tracking, model.name, kind="hourly")
        bikes.set_alias(self.tracking, model.name, "champion", "1")
        replicas = {name: self.operator(name, selector) for name in ("a", "b")}
        self.create(namespace, "bikes", model.name, shard)
        self.wait_template(namespace, "bikes", "1")
        times: dict[str, list[float]] = {
            "SIGKILL lease": [],
            "SIGKILL move": [],
            "SIGTERM lease": [],
            "SIGTERM move": [],
        }
        version = "1"
        try:
            for round_, how in enumerate(["SIGKILL"] * kills + ["SIGTERM"] * terms):
                leader = self.holder(lease)
                assert leader in replicas, f"no leader: {leader}"
                version = "2" if version == "1" else "1"
                start = time.monotonic()
                if how == "SIGKILL":
                    replicas[leader].kill()
                else:
                    replicas[leader].stop()
                bikes.set_alias(self.tracking, model.name, "champion", version)
                self.wait_leader_other_than(lease, leader)
                times[f"{how} lease"].append(time.monotonic() - start)
                self.wait_template(namespace, "bikes", version)
                times[f"{how} move"].append(time.monotonic() - start)
                print(
                    f"[bench] round {round_ + 1} {how}: lease "
                    f"{times[f'{how} lease'][-1]:.1f}s, move {times[f'{how} move'][-1]:.1f}s",
                    flush=True,
                )
                replicas[leader] = self.operator(leader, selector)
        finally:
            for process in replicas.values():
                process.stop()
            self.core.delete_namespace(namespace)
            self.coordination.delete_namespaced_lease(lease, LEASE_NAMESPACE)
        return times

    def shard_memory(self, size: int) -> dict[str, float]:
        """Resident MiB of an operator following none, half and all of `size` resources."""
        namespace = self.namespace()
        model = bikes.train_and_register(self.tracking, f"ha-{uuid.uuid4().hex[:6]}")
        bikes.set_alias(self.tracking, model.name, "champion", "1")
        make_room(self.core, size + 200)
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: self.create(namespace, f"m-{i}", model.name, "ab"[i % 2]),
                    range(size),
                )
            )
        selectors = {  # what the operator follows: its selector
            f"none (`{SHARD_LABEL}=c`)": f"{SHARD_LABEL}=c",
            f"shard `a` ({size // 2})": f"{SHARD_LABEL}=a",
            f"all {size} (`{SHARD_LABEL} in (a,b)`)": f"{SHARD_LABEL} in (a,b)",
        }
        try:
            first = self.operator("seed", f"{SHARD_LABEL} in (a,b)")  # makes them all Ready
            try:
                wait(lambda: self.ready(namespace) >= size, 900, f"{size} resources Ready")
            finally:
                first.stop()
                self.coordination.delete_namespaced_lease(
                    lease_name(f"{SHARD_LABEL} in (a,b)"), LEASE_NAMESPACE
                )
            return {
                followed: self.resident_mib(selector) for followed, selector in selectors.items()
            }
        finally:
            self.core.delete_namespace(namespace)

    def resident_mib(self, selector: str) -> float:
        """Of an operator following `selector`, once its first passes are long done."""
        process = self.operator("memory", selector)
        try:
            time.sleep(90)  # its first passes (a thousand applies), then a heap trim
            assert process.process is not None
            return rss_mib(process.process.pid)
        finally:
            process.stop()
            self.coordination.delete_namespaced_lease(lease_name(selector), LEASE_NAMESPACE)

    def wait_leader_other_than(self, lease: str, leader: str) -> None:
        wait(lambda: self.holder(lease) not in (None, leader), 60, "a new leader")

    def wait_template(self, namespace: str, name: str, version: str) -> None:
        wait(lambda: self.template_version(namespace, name) == version, 120, f"v{version}")

    def ready(self, namespace: str) -> int:
        items = self.custom.list_namespaced_custom_object(
            "aliasop.io", "v1alpha1", namespace, "modeldeployments"
        )["items"]
        return sum((i.get("status") or {}).get("phase") == "Ready" for i in items)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def summary(values: list[float]) -> str:
    if not values:
        return "n/a | n/a | n/a"
    return f"{statistics.median(values):.1f} | {max(values):.1f} | {len(values)}"


def failover_section(times: dict[str, list[float]]) -> str:
    rows = "\n".join(
        f"| {how} | {summary(times[f'{how} lease'])} | {summary(times[f'{how} move'])} |"
        for how in ("SIGKILL", "SIGTERM")
    )
    return f"""{FAILOVER}

`make bench-ha`, {time.strftime("%Y-%m-%d")}, {describe()}.

Two replicas (`--leader-elect`, the shipped timings: 15 s lease, 10 s renew deadline, 2 s
retry). Each round stops the leader and moves the alias at once; *lease* is the time until
the standby holds the Lease, *move* until the Deployment's pod template pins the new version
(p50 | max | rounds, seconds).

| leader stopped by | lease p50 | max | rounds | move p50 | max | rounds |
|---|---|---|---|---|---|---|
{rows}
"""


def shards_section(size: int, memory: dict[str, float]) -> str:
    rows = "\n".join(f"| {followed} | {mib:.0f} |" for followed, mib in memory.items())
    return f"""{SHARDS}

`make bench-ha`, {time.strftime("%Y-%m-%d")}, {describe()}.

{size} ModelDeployments, half labelled `aliasop.io/shard=a`, half `b`, all Ready. One
operator at a time follows a selector; its resident memory 90 s after it starts (its first
passes done, its heap trimmed).

| operator follows | resident MiB |
|---|---|
{rows}
"""


def replace_section(document: str, heading: str, section: str) -> str:
    """`document` with the section under `heading` replaced (or added at the end)."""
    if heading in document:
        before, _, rest = document.partition(heading)
        after = rest[rest.find("\n## ") :] if "\n## " in rest else ""
        document = before.rstrip() + "\n\n" + after.lstrip("\n")
    return document.rstrip() + "\n\n" + section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", nargs="+", default=["failover", "shards"])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--terms", type=int, default=5)
    parser.add_argument("--size", type=int, default=1000)
    args = parser.parse_args()
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".cache/aliasop/kubeconfig")
    workdir = Path(tempfile.mkdtemp(prefix="aliasop-ha-"))
    subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", str(ROOT / "crds")],
        check=True,
    )
    port = local.free_port()
    server = local.mlflow_server(workdir / "mlflow", port).start()
    sections = {}
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/health", timeout=120)
        bench = Bench(kubeconfig, f"http://127.0.0.1:{port}", workdir)
        if "failover" in args.parts:
            sections[FAILOVER] = failover_section(bench.failover(args.kills, args.terms))
        if "shards" in args.parts:
            sections[SHARDS] = shards_section(args.size, bench.shard_memory(args.size))
    finally:
        server.stop()
    document = OUT.read_text() if OUT.exists() else "# Benchmarks\n"
    for heading, section in sections.items():
        document = replace_section(document, heading, section)
        print(section)
    OUT.write_text(document)


if __name__ == "__main__":
    main()
