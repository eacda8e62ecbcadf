"""`aliasop-dev demo`: the whole loop on the test cluster, narrated.

`make demo` builds and starts the cluster first, then runs this with the cluster's kubectl on
PATH and KUBECONFIG set. The demo starts a local MLflow server, registers two versions of a
bike-rentals model, runs the operator, and moves `@champion` forward and back while it
prints what happens. Everything it starts is recorded under $ALIASOP_CACHE/demo and stopped by
`aliasop-dev demo --down` (`make demo-down`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from aliasop_dev import chart, local

NAMESPACE = os.environ.get("ALIASOP_DEMO_NAMESPACE", "aliasop-demo")
MODEL = "bikes"
ALIAS = "champion"
MLFLOW_PORT = int(os.environ.get("ALIASOP_DEMO_MLFLOW_PORT", "5055"))
MLFLOW_URI = f"http://127.0.0.1:{MLFLOW_PORT}"


def repo() -> Path:
    """The aliasop checkout whose crds/ and manifests/ the demo applies: $ALIASOP_REPO if
    set, else the checkout this package sits in (an editable install of dev/), else the
    current directory or one above it."""
    if os.environ.get("ALIASOP_REPO"):
        candidates = [Path(os.environ["ALIASOP_REPO"])]
    else:
        here, cwd = Path(__file__).resolve(), Path.cwd().resolve()
        candidates = [*here.parents, cwd, *cwd.parents]
    for candidate in candidates:
        crd = candidate / "crds" / "aliasop.io_modeldeployments.yaml"
        if crd.is_file() and (candidate / "manifests" / "kustomization.yaml").is_file():
            return candidate
    raise RuntimeError(
        "no aliasop checkout (crds/ and manifests/) found: run the demo from one, "
        "or set ALIASOP_REPO"
    )


def _state_dir() -> Path:
    cache = os.environ.get("ALIASOP_CACHE") or str(Path.home() / ".cache" / "aliasop")
    return Path(cache) / "demo"


class Narrator:
    """Numbered steps and a timeline with seconds since the demo started."""

    def __init__(self, steps: int) -> None:
        self.steps, self.step_no, self.started = steps, 0, time.monotonic()

    def step(self, text: str) -> None:
        self.step_no += 1
        print(f"\n\033[1m[{self.step_no}/{self.steps}] {text}\033[0m", flush=True)

    def line(self, text: str) -> None:
        print(f"  {time.monotonic() - self.started:7.1f}s  {text}", flush=True)


def kubectl(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def kubectl_json(*args: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(kubectl(*args, "-o", "json"))
    return body


def run_demo(canary: bool = False) -> int:
    """`canary`: end with a canary release of version 2 (`make demo CANARY=1`)."""
    if not os.environ.get("KUBECONFIG"):
        print("KUBECONFIG is not set: run the demo with `make demo`.", file=sys.stderr)
        return 2
    state, checkout = _state_dir(), repo()
    say = Narrator(steps=8 if canary else 7)

    say.step(f"MLflow tracking server at {MLFLOW_URI} (sqlite registry, artifacts on disk)")
    _start_mlflow(state, say)

    say.step(f"Training two versions of {MODEL!r}, a regressor of hourly bike rentals")
    v1, v2 = _register_versions(say)
    _move_alias(v1, say)

    say.step("Installing aliasop: CRD, manifests/ (RBAC, ServiceAccount) and a ModelDeployment")
    kubectl("apply", "--server-side", "-f", str(checkout / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/modeldeployments.aliasop.io")
    # A Deployment's selector is immutable: one from an earlier manifests/ is replaced.
    operator = ("deployment", chart.RELEASE, "-n", chart.NAMESPACE)
    installed = kubectl("get", *operator, "--ignore-not-found", "-o", "name")
    if installed and chart.selector_changed(kubectl_json("get", *operator)):
        kubectl("delete", *operator, "--wait")
    kubectl("apply", "-k", str(checkout / "manifests"))
    kubectl("apply", "-f", "-", stdin=_namespace_and_mdep())
    say.line(f"applied ModelDeployment {NAMESPACE}/{MODEL} following models:/{MODEL}@{ALIAS}")

    say.step("Running the operator with its ServiceAccount's token (log: demo/operator.log)")
    _start_operator(state, say)
    watch = Watch(say)
    watch.until(lambda s: s.get("phase") == "Ready" and s.get("servingVersion") == v1)
    print(kubectl("get", "mdep", "-n", NAMESPACE), flush=True)
    pods = {v1: _serving_pod()}

    say.step(f"Moving @{ALIAS} to version {v2} in MLflow: aliasop rolls the pods forward")
    _move_alias(v2, say)
    watch.until(lambda s: s.get("phase") == "Ready" and s.get("servingVersion") == v2)
    pods[v2] = _serving_pod()
    print(kubectl("get", "mdep", "-n", NAMESPACE), flush=True)

    say.step(f"Moving @{ALIAS} back to version {v1}: aliasop rolls back")
    _move_alias(v1, say)
    watch.until(lambda s: s.get("phase") == "Ready" and s.get("servingVersion") == v1)
    print(kubectl("get", "mdep", "-n", NAMESPACE), flush=True)
    history = kubectl_json("get", "mdep", MODEL, "-n", NAMESPACE)["status"]["history"]
    for entry in reversed(history):
        say.line(
            f"history: version {entry['version']:>2}  {entry['reason']:<10} "
            f"{entry['outcome']:<10} {entry['startedAt']} -> {entry.get('finishedAt')}"
        )

    if canary:
        say.step(f"A canary: version {v2} again, one pod first, promoted by hand")
        _canary(v2, watch, say)

    say.step("Predictions from the serving pod aliasop rendered, run as local processes")
    for version, pod in pods.items():
        _predict(state, version, pod, say)

    _next_steps()
    return 0


# Of 3 replicas: one canary pod, then two; a pause for a promotion by hand in between.
CANARY_STEPS = [{"setWeight": 33}, {"pause": {}}, {"setWeight": 66}, {"pause": {"seconds": 5}}]


def _canary(version: str, watch: Watch, say: Narrator) -> None:
    rollout = {"strategy": "Canary", "steps": CANARY_STEPS}
    kubectl(
        "patch",
        "mdep",
        MODEL,
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"rollout": rollout}}),
    )
    say.line(f"rollout.strategy: Canary, steps: {json.dumps(CANARY_STEPS)}")
    watch.until(lambda s: s.get("phase") == "Ready" and s.get("observedGeneration") == 2)
    _move_alias(version, say)
    watch.until(lambda s: (s.get("canary") or {}).get("phase") == "Paused")
    print(kubectl("get", "mdep,deployments", "-n", NAMESPACE), flush=True)
    kubectl(
        "annotate", "--overwrite", "mdep", MODEL, "-n", NAMESPACE, f"aliasop.io/promote={version}"
    )
    say.line(f"kubectl annotate mdep {MODEL} aliasop.io/promote={version}")
    watch.until(lambda s: s.get("phase") == "Ready" and s.get("servingVersion") == version)
    events = kubectl_json(
        "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={MODEL}"
    )["items"]
    canary_reasons = ("RolloutStarted", "CanaryStep", "CanaryPromoted", "RolloutSucceeded")
    for event in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
        if event["reason"] in canary_reasons and "canary" in event["message"].lower():
            say.line(f"Event {event['reason']}: {event['message']}")


def stop_demo() -> int:
    state = _state_dir()
    for name in ("operator", "mlflow"):
        if local.stop_pidfile(state / f"{name}.pid"):
            print(f"stopped the demo's {name}")
    return 0


def _start_mlflow(state: Path, say: Narrator) -> None:
    try:
        if httpx.get(f"{MLFLOW_URI}/health", timeout=2).status_code == 200:
            say.line("already running: reusing it")
            return
    except httpx.HTTPError:
        pass
    server = local.mlflow_server(state / "mlflow", MLFLOW_PORT).start()
    server.write_pidfile(state / "mlflow.pid")
    say.line("starting (about 10 seconds)...")
    server.wait_ready(f"{MLFLOW_URI}/health", timeout=120)
    say.line("healthy")


def _register_versions(say: Narrator) -> tuple[str, str]:
    from mlflow import MlflowClient

    from aliasop_dev import bikes

    existing = MlflowClient(tracking_uri=MLFLOW_URI).search_model_versions(f"name='{MODEL}'")
    versions = sorted((v.version for v in existing), key=int)
    if len(versions) >= 2:
        say.line(f"reusing registered versions {versions[0]} and {versions[1]}")
        return versions[0], versions[1]
    for kind in ("linear", "hourly")[len(versions) :]:
        registered = bikes.train_and_register(MLFLOW_URI, MODEL, kind=kind)
        versions.append(registered.version)
        say.line(f"registered version {registered.version}: {kind} model, run {registered.run_id}")
    return versions[0], versions[1]


def _move_alias(version: str, say: Narrator) -> None:
    from aliasop_dev import bikes

    bikes.set_alias(MLFLOW_URI, MODEL, ALIAS, version)
    say.line(f"MLflow: @{ALIAS} -> version {version}")


def _namespace_and_mdep() -> str:
    return f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels: {{pod-security.kubernetes.io/enforce: restricted}}
---
apiVersion: aliasop.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {MODEL}, namespace: {NAMESPACE}}}
spec:
  model: models:/{MODEL}@{ALIAS}
  replicas: 3
  pollIntervalSeconds: 5
"""


def _start_operator(state: Path, say: Narrator) -> None:
    local.stop_pidfile(state / "operator.pid")
    kubeconfig = local.service_account_kubeconfig(
        ["kubectl"], "aliasop-system", "aliasop", state / "operator-kubeconfig"
    )
    health_port = local.free_port()
    operator = local.operator(
        state / "operator.log", str(kubeconfig), MLFLOW_URI, health_port, NAMESPACE
    ).start()
    operator.write_pidfile(state / "operator.pid")
    operator.wait_ready(f"http://127.0.0.1:{health_port}/healthz", timeout=60)
    say.line("operator is up")


class Watch:
    """Prints each change of the ModelDeployment's status and of its pods, as it happens."""

    def __init__(self, say: Narrator) -> None:
        self.say, self.last = say, ""

    def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = kubectl_json("get", "mdep", MODEL, "-n", NAMESPACE).get("status") or {}
            canary = status.get("canary")
            where = f" canary: step {canary['step']}, {canary['weight']}%" if canary else ""
            snapshot = (
                f"phase={status.get('phase', '-'):<11} alias={status.get('aliasVersion', '-')} "
                f"target={status.get('targetVersion', '-')} "
                f"serving={status.get('servingVersion', '-')}{where}  "
                f"pods ready: {_pods_by_version()}"
            )
            if snapshot != self.last:
                self.say.line(snapshot)
                self.last = snapshot
            if done(status):
                return
            time.sleep(0.3)
        raise TimeoutError(f"the demo timed out; see {_state_dir() / 'operator.log'}")


def _pods_by_version() -> str:
    pods = kubectl_json("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/instance=" + MODEL)
    counts: dict[str, int] = {}
    for pod in pods["items"]:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
        if ready and not pod["metadata"].get("deletionTimestamp"):
            version = pod["metadata"]["labels"]["aliasop.io/model-version"]
            counts[version] = counts.get(version, 0) + 1
    return ", ".join(f"v{v}: {n}" for v, n in sorted(counts.items())) or "none"


def _serving_pod() -> dict[str, Any]:
    deployment = kubectl_json("get", "deployment", MODEL, "-n", NAMESPACE)
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _predict(state: Path, version: str, pod: dict[str, Any], say: Narrator) -> None:
    from aliasop_dev import bikes

    for container in [*pod["initContainers"], *pod["containers"]]:
        command = " ".join([*container["command"], *container["args"]])
        say.line(f"version {version}, {container['name']}: {command}")
    process = local.serving_pod(pod, state / f"serving-v{version}").start()
    port = pod["containers"][0]["ports"][0]["containerPort"]
    try:
        process.wait_ready(f"http://127.0.0.1:{port}/ping", timeout=120)
        example = bikes.bike_rentals()[0].head(3)
        response = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_split": example.to_dict(orient="split")},
            timeout=30,
        )
        response.raise_for_status()
        predictions = [round(p) for p in response.json()["predictions"]]
        for row, prediction in zip(example.to_dict(orient="records"), predictions, strict=True):
            say.line(
                f"  hour {row['hour']:>2}, weekday {row['weekday']}, "
                f"{row['temperature']:>5}°C -> {prediction} rentals"
            )
    finally:
        process.stop()


def _next_steps() -> None:
    kubeconfig = os.environ["KUBECONFIG"]
    print(
        f"""
\033[1mWhere to look next\033[0m
  kubectl --kubeconfig {kubeconfig} get mdep -n {NAMESPACE}
  kubectl --kubeconfig {kubeconfig} describe mdep {MODEL} -n {NAMESPACE}   # conditions, Events
  MLflow UI: {MLFLOW_URI}/#/models/{MODEL}   (move @{ALIAS} there and watch the pods follow)
  operator log: {_state_dir() / "operator.log"}
Stop everything: make demo-down
""",
        flush=True,
    )
