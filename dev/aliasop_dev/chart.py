"""What is generated from the Helm chart `charts/aliasop`:

- `manifests/aliasop.yaml`, the chart rendered with its default values into namespace
  `aliasop-system`: the chart is the one source of the install manifests, `kubectl apply -k
  manifests/` and `helm install` the two ways to install them. `make manifests` writes it;
  tests/integration/test_helm.py fails when it differs from what the chart renders.
- `charts/aliasop/README.md`, made by helm-docs from the chart's values.yaml and
  README.md.gotmpl (`--readme`, `make chart-docs`); tests/integration/test_chart_readme.py
  fails when it is stale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "aliasop"
MANIFESTS = REPO / "manifests" / "aliasop.yaml"
CHART_README = CHART / "README.md"
RELEASE = "aliasop"
NAMESPACE = "aliasop-system"
HEADER = (
    "# Rendered from charts/aliasop with its default values by `make manifests`: edit the\n"
    "# chart, not this file (tests/integration/test_helm.py fails when the two differ).\n"
)


def tool(name: str) -> Path:
    """A tool that tests/tools/ builds into the cache."""
    cache = os.environ.get("ALIASOP_CACHE") or str(Path.home() / ".cache" / "aliasop")
    return Path(cache) / "tools" / "bin" / name


def default_helm() -> Path:
    """The helm that tests/tools/build.sh builds into the cache."""
    return tool("helm")


def render_chart_readme(helm_docs: Path) -> str:
    """The chart's README as helm-docs writes it, made in a copy of the chart so that the
    committed one is left alone (a test compares the two)."""
    with tempfile.TemporaryDirectory() as scratch:
        chart = Path(scratch) / CHART.name
        shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("README.md"))
        subprocess.run(
            [
                str(helm_docs),
                "--chart-search-root",
                str(chart),
                "--sort-values-order",
                "file",
                "--log-level",
                "warning",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return (chart / "README.md").read_text()


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


def selector_changed(live_deployment: dict[str, Any]) -> bool:
    """Whether the operator Deployment installed from manifests/ selects its pods otherwise
    than manifests/aliasop.yaml does now. A Deployment's selector is immutable, so such an
    install is upgraded by deleting the Deployment first (docs/user-guide.md, "Upgrade and
    uninstall"); the serving pods are not the operator's and stay."""
    (deployment,) = [
        doc
        for doc in yaml.safe_load_all(MANIFESTS.read_text())
        if doc and doc["kind"] == "Deployment"
    ]
    return bool(live_deployment["spec"]["selector"] != deployment["spec"]["selector"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aliasop_dev.chart", description=__doc__)
    parser.add_argument("--helm", type=Path, default=default_helm(), help="the helm binary")
    parser.add_argument("--output", type=Path, default=MANIFESTS, help=f"default: {MANIFESTS}")
    parser.add_argument(
        "--readme",
        action="store_true",
        help=f"write {CHART_README} with helm-docs instead of the manifests",
    )
    args = parser.parse_args(argv)
    if args.readme:
        CHART_README.write_text(render_chart_readme(tool("helm-docs")))
    else:
        args.output.write_text(render_manifests(args.helm))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
