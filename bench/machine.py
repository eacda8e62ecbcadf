"""The description of this machine that every benchmark report starts with."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import mlflow


def describe() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_gib = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory_gib} GiB, Python {platform.python_version()}, "
        f"MLflow {mlflow.__version__}"
    )
