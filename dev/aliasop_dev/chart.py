"""`manifests/aliasop.yaml`, rendered from the Helm chart `charts/aliasop` with its default
values into namespace `aliasop-system`: the chart is the one source of the install manifests,
`kubectl apply -k manifests/` and `helm install` the two ways to install them.

`make manifests` writes the file; tests/integration/test_helm.py fails when it differs from
what the chart renders.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "aliasop"
MANIFESTS = REPO / "manifests" / "aliasop.yaml"
RELEASE = "aliasop"
NAMESPACE = "aliasop-system"
HEADER = (
    "# Rendered from charts/aliasop with its default values by `make manifests`: edit the\n"
    "# chart, not this file (tests/integration/test_helm.py fails when the two differ).\n"
)


def default_helm() -> Path:
    """The helm that tests/tools/build.sh builds into the cache."""
    cache = os.environ.get("ALIASOP_CACHE") or str(Path.home() / ".cache" / "aliasop")
    return Path(cache) / "tools" / "bin" / "helm"


def render_manifests(helm: Path) -> str:
    """What `manifests/aliasop.yaml` holds: `helm template` of the chart's defaults (CRDs
    excluded: `kubectl apply -f crds/` installs them; so is the `helm test` pod, which only
    `helm test` runs), under a header."""
    rendered = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--skip-tests"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return HEADER + rendered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aliasop_dev.chart", description=__doc__)
    parser.add_argument("--helm", type=Path, default=default_helm(), help="the helm binary")
    parser.add_argument("--output", type=Path, default=MANIFESTS, help=f"default: {MANIFESTS}")
    args = parser.parse_args(argv)
    args.output.write_text(render_manifests(args.helm))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
