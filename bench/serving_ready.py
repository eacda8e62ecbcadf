"""Time from starting the rendered serving command to its first answers, for a small
scikit-learn model served from a real MLflow server. Writes docs/serving-ready.md.

    .venv/bin/python bench/serving_ready.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from machine import describe

from aliasop.builders import Owner, PinnedVersion, ServingDefaults, get_deployment
from aliasop.models import ModelDeploymentSpec
from aliasop_dev import bikes, local

OUT = Path(__file__).resolve().parents[1] / "docs" / "serving-ready.md"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    work = Path(tempfile.mkdtemp(prefix="aliasop-bench-"))
    port = local.free_port()
    server = local.mlflow_server(work / "mlflow", port).start()
    tracking = f"http://127.0.0.1:{port}"
    ready, first = [], []
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
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            base = f"http://127.0.0.1:{spec.serving.port}"
            started = time.perf_counter()
            process = local.serving_process(container, work / f"serve-{run}.log").start()
            try:
                process.wait_ready(f"{base}/ping", timeout=180)
                ready.append(time.perf_counter() - started)
                httpx.post(
                    f"{base}/invocations",
                    json={"dataframe_split": version.input_example.to_dict(orient="split")},
                    timeout=30,
                ).raise_for_status()
                first.append(time.perf_counter() - started)
            finally:
                process.stop()
            print(f"run {run + 1}: ready {ready[-1]:.2f}s, first prediction {first[-1]:.2f}s")
    finally:
        server.stop()

    def row(name: str, values: list[float]) -> str:
        return (
            f"| {name} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} |"
        )

    OUT.write_text(
        "# Serving process: time to ready\n\n"
        f"`bench/serving_ready.py`, {runs} runs, {time.strftime('%Y-%m-%d')}, on {describe()}.\n"
        "The serving command exactly as the operator renders it "
        "(`mlflow models serve --env-manager local`), loading a one-hot + ridge scikit-learn "
        "model from a local MLflow server (sqlite registry, proxied artifacts).\n\n"
        "| seconds from process start to | min | median | max |\n|---|---|---|---|\n"
        + row("`/ping` answers 200 (readiness)", ready)
        + "\n"
        + row("first `/invocations` answered", first)
        + "\n"
    )
    print(OUT.read_text())


if __name__ == "__main__":
    main()
