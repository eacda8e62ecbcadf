"""Time from starting the rendered serving pod (download step, then server) to its first
answer, for a small scikit-learn model on a real MLflow server, against the server reading
the model from the registry itself. Writes docs/serving-ready.md.

    .venv/bin/python bench/serving_ready.py [--runs 5]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from machine import describe

from aliasop.builders import SERVING_MODEL_PATH_ENV, ServingDefaults, get_deployment
from aliasop.domain import Owner, PinnedVersion
from aliasop.models import ModelDeploymentSpec
from aliasop_dev import bikes, local

OUT = Path(__file__).resolve().parents[1] / "docs" / "serving-ready.md"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="aliasop-bench-"))
    port = local.free_port()
    server = local.mlflow_server(work / "mlflow", port).start()
    tracking = f"http://127.0.0.1:{port}"
    times: dict[str, list[float]] = {row: [] for row in ROWS}
    try:
        server.wait_ready(f"{tracking}/health", timeout=120)
        version = bikes.train_and_register(tracking, "bench-bikes", kind="hourly")
        spec = ModelDeploymentSpec(model="models:/bench-bikes@champion")
        for run in range(runs):
            spec = spec.model_copy(
                update={"serving": spec.serving.model_copy(update={"port": local.free_port()})}
            )
            deployment = get_deployment(
                Owner("bench", "bench", "uid"),
                spec,
                PinnedVersion(version.version, version.run_id),
                ServingDefaults(image="unused", tracking_uri=tracking),
            )
            pod = deployment["spec"]["template"]["spec"]
            base = f"http://127.0.0.1:{spec.serving.port}"
            example = version.input_example.to_dict(orient="split")
            # Before the download step: the server read the model from the registry itself.
            direct = copy.deepcopy(pod)
            del direct["initContainers"]
            env = direct["containers"][0]["env"]
            (model_path,) = (e for e in env if e["name"] == SERVING_MODEL_PATH_ENV)
            model_path["value"] = f"models:/bench-bikes/{version.version}"
            started = time.perf_counter()
            serve(local.serving_pod(direct, work / f"direct-{run}"), base, example)
            times["direct"].append(time.perf_counter() - started)
            # With it: the download, then the server from the local files; then the server
            # restarted (a liveness restart), which finds the files still there.
            started = time.perf_counter()
            process = local.serving_pod(pod, work / f"pod-{run}")
            times["download"].append(time.perf_counter() - started)
            serve(process, base, example)
            times["pod"].append(time.perf_counter() - started)
            started = time.perf_counter()
            serve(process, base, example)
            times["restart"].append(time.perf_counter() - started)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    finally:
        server.stop()

    def row(name: str, values: list[float]) -> str:
        return (
            f"| {name} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} |"
        )

    OUT.write_text(
        "# Serving pod: time to its first prediction\n\n"
        f"`bench/serving_ready.py`, {runs} runs, {time.strftime('%Y-%m-%d')}, on {describe()}.\n"
        "The serving pod exactly as the operator renders it, its containers run as local "
        "processes: the download step (`mlflow artifacts download`, an init container), then "
        "the scoring server (uvicorn running MLflow's scoring app, as `mlflow models serve "
        "--env-manager local` does) from the downloaded files. The model is a "
        "one-hot + ridge scikit-learn model on a local MLflow server (sqlite registry, proxied "
        "artifacts). *Before* is the server alone reading the model from the registry, as "
        "pods did before the download step.\n\n"
        "| seconds from start to the first `/invocations` answered | min | median | max |\n"
        "|---|---|---|---|\n"
        + "\n".join(row(ROWS[key], values) for key, values in times.items())
        + f"\n\nLoad average (1 min) at the start and the end: {load[0]:.1f}, "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n\n"
        "The download step costs one more process start and the download, so a new pod is "
        "ready that much later than one whose server reads the model itself. What it buys: a "
        "failed download shows as the pod's Init:Error with its reason, not a crash-looping "
        "server; no registry credentials in the server; and a restarted server finds the files "
        "still there (for a large model, the difference that counts).\n"
    )
    print(OUT.read_text())


ROWS = {
    "direct": "before: the server reads the model from the registry",
    "download": "the download step alone",
    "pod": "the download step, then the server from the files",
    "restart": "the server restarted in the same pod (files still there)",
}


def serve(process: local.LocalProcess, base: str, example: dict[str, object]) -> None:
    """Start `process`, wait for its readiness, get one prediction, stop it."""
    process.start()
    try:
        process.wait_ready(f"{base}/ping", timeout=180)
        httpx.post(
            f"{base}/invocations", json={"dataframe_split": example}, timeout=30
        ).raise_for_status()
    finally:
        process.stop()


if __name__ == "__main__":
    main()
