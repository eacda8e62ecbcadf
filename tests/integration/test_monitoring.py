"""The chart's monitoring on real parts: promtool checks and unit-tests the alert rules, the
operator's per-resource series come and go with the resource, and every query of the Grafana
dashboard returns series from a real Prometheus scraping the running operator."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from aliasop_dev import bikes, local

from metric_sources import PROMETHEUS_BINARY
from resources import Versions, View, endpoint
from support import wait_for

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "aliasop" / "monitoring" / "aliasop.rules.yaml"
RULE_TESTS = Path(__file__).parent / "monitoring" / "aliasop.rules.test.yaml"
DASHBOARD = ROOT / "charts" / "aliasop" / "monitoring" / "aliasop-dashboard.json"
PROMTOOL = PROMETHEUS_BINARY.parent / "promtool"
# What the dashboard's variables stand for when a query is sent as it is.
VARIABLES = {"$namespace": ".*", "$__rate_interval": "1m"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: run tests/tools/build.sh")
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_checks_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_promtool_rule_tests_pass() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def resource_series(operator: local.LocalProcess, namespace: str, name: str) -> set[str]:
    """Names of the operator's series labelled with this resource."""
    text = httpx.get(endpoint(operator, "/metrics"), timeout=10).text
    return {
        sample.name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if (sample.labels.get("namespace"), sample.labels.get("name")) == (namespace, name)
    }


def test_a_resources_series_appear_and_disappear_with_it(
    operator: local.LocalProcess,
    k8s: client.ApiClient,
    serving_v1: Callable[..., View],
    two_versions: Versions,
) -> None:
    view = serving_v1()
    ns = view.namespace
    wanted = {
        "aliasop_resource_info",
        "aliasop_resource_version",
        "aliasop_canary_step",
        "aliasop_canary_weight",
        "aliasop_resource_condition",
    }
    wait_for(lambda: wanted <= resource_series(operator, ns, "bikes"), 30, message="bikes' series")
    client.CustomObjectsApi(k8s).delete_namespaced_custom_object(
        "aliasop.io", "v1alpha1", ns, "modeldeployments", "bikes"
    )
    wait_for(lambda: not resource_series(operator, ns, "bikes"), 60, message="bikes' series gone")


@pytest.fixture
def scraping_operator(operator: local.LocalProcess, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the operator every second; its base URL."""
    if not PROMETHEUS_BINARY.exists():
        pytest.fail(f"{PROMETHEUS_BINARY} is missing: run tests/tools/build.sh")
    port = local.free_port()
    target = f"127.0.0.1:{operator.env['ALIASOP_HTTP_PORT']}"
    process = local.prometheus_server(PROMETHEUS_BINARY, tmp_path, port, [target]).start()
    try:
        process.wait_ready(f"http://127.0.0.1:{port}/-/ready", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def test_every_dashboard_query_returns_series(
    scraping_operator: str,
    serving_v1: Callable[..., View],
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
) -> None:
    """A canary left at its pause after a finished rollout: every panel has something to
    show, from the series of a real scrape."""
    v2 = two_versions[1]
    view = serving_v1(
        replicas=4, rollout={"strategy": "Canary", "steps": [{"setWeight": 25}, {"pause": {}}]}
    )
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    wait_for(
        lambda: (view.status().get("canary") or {}).get("phase") == "Paused",
        90,
        message="the canary at its pause",
    )
    empty: list[str] = []

    def answered(title: str, expr: str) -> list[Any]:
        answer = httpx.get(
            f"{scraping_operator}/api/v1/query", params={"query": expr}, timeout=10
        ).json()
        assert answer["status"] == "success", f"{title}: {answer}"
        result: list[Any] = answer["data"]["result"]
        return result

    for title, expr in dashboard_queries():
        # Rates need two scrapes of a series; give each query that long to have series.
        try:
            wait_for(lambda t=title, e=expr: answered(t, e) or None, 30, message=title)
        except TimeoutError:
            empty.append(f"{title}: {expr}")
    assert empty == []
