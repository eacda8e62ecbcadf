"""The chart's day-2 values: the dashboard ConfigMap and the PrometheusRule (opt-in), the
notification receivers' Secret mounted into the operator, and the log settings. Rendered by
the real helm; what the test cluster can validate goes through its API server (dry run)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aliasop.notices import Receivers
from aliasop_dev import chart

from support import REPO, Cluster

pytestmark = pytest.mark.timeout(120)
CHART = REPO / "charts" / "aliasop"
RULES = CHART / "monitoring" / "aliasop.rules.yaml"
DASHBOARD = CHART / "monitoring" / "aliasop-dashboard.json"


def helm(*args: str) -> str:
    binary = chart.default_helm()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make tools-build`")
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def render(*values: str) -> dict[str, list[dict[str, Any]]]:
    args = [a for value in values for a in ("--set", value)]
    rendered = helm("template", "ops", str(CHART), "--namespace", "ops", *args)
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all(rendered):
        if doc:
            kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def container(kinds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (deployment,) = kinds["Deployment"]
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(operator, dict)
    return operator


def env(kinds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container(kinds)["env"]}


def test_off_by_default_with_text_logs() -> None:
    kinds = render()
    assert "PrometheusRule" not in kinds and "ConfigMap" not in kinds and "Secret" not in kinds
    variables = env(kinds)
    assert (variables["ALIASOP_LOG_FORMAT"], variables["ALIASOP_LOG_LEVEL"]) == ("text", "INFO")
    assert "ALIASOP_NOTIFICATION_RECEIVERS_FILE" not in variables


def test_dashboard_and_rules_carry_the_files_as_they_are(cluster: Cluster) -> None:
    kinds = render(
        "monitoring.dashboard.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.prometheusRule.labels.release=kps",
        "logs.format=json",
        "logs.level=DEBUG",
    )
    (dashboard,) = kinds["ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["aliasop.json"]) == json.loads(DASHBOARD.read_text())
    (rule,) = kinds["PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert env(kinds)["ALIASOP_LOG_FORMAT"] == "json"
    # The PrometheusRule's CRD is not on the test cluster; the ConfigMap goes through.
    dashboard["metadata"]["namespace"] = "default"
    answer = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(dashboard), check=False
    )
    assert answer.returncode == 0, answer.stderr


def test_receivers_become_a_secret_mounted_into_the_operator(tmp_path: Path) -> None:
    kinds = render(
        "notifications.receivers[0].name=ml-team",
        "notifications.receivers[0].url=https://hooks.example/x",
        "notifications.receivers[0].signingKey=k3y",
        "notifications.receivers[0].format=slack",
    )
    (secret,) = kinds["Secret"]
    listed = Receivers.model_validate(yaml.safe_load(secret["stringData"]["receivers.yaml"]))
    assert [(r.name, r.url, r.format) for r in listed.receivers] == [
        ("ml-team", "https://hooks.example/x", "slack")
    ]
    (deployment,) = kinds["Deployment"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["notifications"]["secret"]["secretName"] == secret["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container(kinds)["volumeMounts"]}
    path = env(kinds)["ALIASOP_NOTIFICATION_RECEIVERS_FILE"]
    assert path == f"{mounts['notifications']}/receivers.yaml"

    existing = render("notifications.existingSecret=mine")
    assert "Secret" not in existing
    volumes = {
        v["name"]: v for v in existing["Deployment"][0]["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["notifications"]["secret"]["secretName"] == "mine"


def test_the_schema_refuses_a_bad_receiver() -> None:
    binary = chart.default_helm()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make tools-build`")
    done = subprocess.run(
        [str(binary), "template", "ops", str(CHART), "--set", "notifications.receivers[0].name=x",
         "--set", "notifications.receivers[0].url=ftp://nope", "--set", "logs.format=xml"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "/notifications/receivers/0/url" in done.stderr and "/logs/format" in done.stderr
