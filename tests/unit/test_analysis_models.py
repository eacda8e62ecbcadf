"""The analysis step's models and the CEL rules the CRD will carry: both refuse the same specs.

The rules run in cel-python, whose matches() is RE2 as in the API server."""

import copy
from typing import Any

import celpy
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from aliasop.analysis_models import (
    TEMPLATE_RULE,
    AnalysisMetric,
    AnalysisRun,
    AnalysisStep,
    Measurement,
    MeasurementPhase,
    MetricResult,
)
from aliasop.crd import analysis_step_schema, structural
from aliasop.templating import check_template

_CEL = celpy.Environment()


def _rule_holds(rule: str, value: Any) -> bool:
    program = _CEL.program(_CEL.compile(rule))
    return bool(program.evaluate({"self": celpy.json_to_cel(value)}))


def cel_refusals(schema: dict[str, Any], value: Any) -> list[str]:
    """The messages of the CEL rules `value` breaks, walking the structural schema as the API
    server does (rules of absent fields do not run)."""
    messages = [
        rule["message"]
        for rule in schema.get("x-kubernetes-validations", [])
        if not _rule_holds(rule["rule"], value)
    ]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                messages += cel_refusals(properties[key], item)
            elif isinstance(schema.get("additionalProperties"), dict):
                messages += cel_refusals(schema["additionalProperties"], item)
    if isinstance(value, list) and "items" in schema:
        for item in value:
            messages += cel_refusals(schema["items"], item)
    return messages


PROMETHEUS = {"address": "http://prometheus.monitoring:9090", "query": "sum(up)"}
WEB = {"url": "http://scorer/score?version={{version}}", "jsonPath": "$.score"}


def step(**metric: Any) -> dict[str, Any]:
    base = {"name": "m", "prometheus": PROMETHEUS, "thresholdRange": {"max": 0.05}}
    return {"interval": 10, "count": 3, "metrics": [{**base, **metric}]}


ISSUE_EXAMPLE = {
    "interval": 10,
    "count": 3,
    "failureLimit": 1,
    "metrics": [
        {
            "name": "error-rate",
            "prometheus": {
                "address": "http://prometheus.monitoring:9090",
                "query": 'sum(rate(errors_total{version="{{version}}"}[1m]))',
            },
            "thresholdRange": {"max": 0.05},
        },
        {
            "name": "offline-score",
            "web": {
                "url": "http://scorer/score?model={{model}}&version={{version}}",
                "jsonPath": "$.score",
            },
            "thresholdRange": {"min": 0.8},
        },
    ],
}


def test_the_issues_example_reads_with_the_defaults() -> None:
    parsed = AnalysisStep.model_validate(ISSUE_EXAMPLE)
    assert (parsed.interval, parsed.count, parsed.failure_limit) == (10, 3, 1)
    assert parsed.consecutive_error_limit == 4
    assert [m.name for m in parsed.metrics] == ["error-rate", "offline-score"]
    web = parsed.metrics[1].web
    assert web is not None and web.json_path == "$.score" and web.headers == {}
    assert cel_refusals(analysis_step_schema(), ISSUE_EXAMPLE) == []
    assert AnalysisStep.model_validate(parsed.model_dump(by_alias=True)) == parsed


ACCEPTED = [
    step(thresholdRange={"min": 1.0, "max": 1.0}),
    step(thresholdRange={"min": -5.0}),
    step(prometheus=None, web=WEB),
    step(prometheus=None, web={**WEB, "headers": {"X-Scope-OrgID": "team-a"}}),
    step(prometheus={**PROMETHEUS, "query": "up{job='{{ name }}',ns=\"{{namespace}}\"}"}),
    step(prometheus={**PROMETHEUS, "address": "http://prometheus.{{namespace}}:9090"}),
]

# (spec, the message both the model and the CRD's rules give)
REFUSED = [
    (step(web=WEB), "exactly one provider"),
    (step(prometheus=None), "exactly one provider"),
    (step(thresholdRange={}), "min, max or both"),
    (step(thresholdRange={"min": 2.0, "max": 1.0}), "may not be greater"),
    (step(prometheus={**PROMETHEUS, "query": "up{pod='{{pod}}'}"}), "unknown placeholder"),
    (step(prometheus={**PROMETHEUS, "address": "http://{{host}}:9090"}), "unknown placeholder"),
    (step(prometheus=None, web={**WEB, "url": "http://s/{{args.v}}"}), "unknown placeholder"),
    (step(prometheus=None, web={**WEB, "headers": {"Bad Header": "x"}}), "HTTP header names"),
]


def _without_nulls(spec: dict[str, Any]) -> dict[str, Any]:
    """What the API server keeps: a null in a non-nullable field is pruned."""
    spec = copy.deepcopy(spec)
    for metric in spec["metrics"]:
        for key in [k for k, v in metric.items() if v is None]:
            del metric[key]
    return spec


@pytest.mark.parametrize("spec", ACCEPTED)
def test_both_accept(spec: dict[str, Any]) -> None:
    AnalysisStep.model_validate(spec)
    assert cel_refusals(analysis_step_schema(), _without_nulls(spec)) == []


@pytest.mark.parametrize(("spec", "message"), REFUSED)
def test_both_refuse(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AnalysisStep.model_validate(spec)
    refusals = cel_refusals(analysis_step_schema(), _without_nulls(spec))
    assert refusals and all(message in refusal for refusal in refusals), refusals


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"interval": 0}, "greater than or equal to 1"),
        ({"count": 0}, "greater than or equal to 1"),
        ({"failureLimit": -1}, "greater than or equal to 0"),
        ({"consecutiveErrorLimit": -1}, "greater than or equal to 0"),
        ({"metrics": []}, "at least 1 item"),
        ({"metrics": [ISSUE_EXAMPLE["metrics"][0]] * 2}, "unique: error-rate"),
        ({"metrics": [{**ISSUE_EXAMPLE["metrics"][0], "name": "Error_Rate"}]}, "pattern"),
        (
            {"metrics": [{**ISSUE_EXAMPLE["metrics"][1], "web": {**WEB, "jsonPath": "score"}}]},
            "pattern",
        ),
        (
            {"metrics": [{**ISSUE_EXAMPLE["metrics"][0], "prometheus": {"query": "up"}}]},
            "address",
        ),
        (
            {"metrics": [{**ISSUE_EXAMPLE["metrics"][0], "thresholdRange": {"max": "inf"}}]},
            "finite",
        ),
    ],
)
def test_what_the_schema_says_itself(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AnalysisStep.model_validate({**ISSUE_EXAMPLE, **change})


def test_the_step_schema_is_structural_and_carries_the_rules() -> None:
    schema = analysis_step_schema()
    metrics = schema["properties"]["metrics"]
    assert (metrics["minItems"], metrics["maxItems"]) == (1, 10)
    assert metrics["x-kubernetes-list-type"] == "map"
    assert metrics["x-kubernetes-list-map-keys"] == ["name"]
    metric = metrics["items"]
    assert metric["required"] == ["name", "thresholdRange"]
    # Pruned, not kept as null: has() then means "set".
    for field in ("prometheus", "web"):
        assert "nullable" not in metric["properties"][field]
    threshold = metric["properties"]["thresholdRange"]
    assert all("nullable" not in bound for bound in threshold["properties"].values())
    assert schema["properties"]["consecutiveErrorLimit"]["default"] == 4

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(schema, "analysis")
    # What status will keep of a run: structural too, every field described (kubectl explain).
    run = structural(AnalysisRun.model_json_schema(by_alias=True, mode="validation"))
    walk(run, "run")
    undescribed: list[str] = []

    def described(node: dict[str, Any], path: str) -> None:
        for name, child in (node.get("properties") or {}).items():
            if not child.get("description"):
                undescribed.append(f"{path}.{name}")
            described(child, f"{path}.{name}")
        if "items" in node:
            described(node["items"], f"{path}[]")

    described(schema, "analysis")
    described(run, "run")
    assert undescribed == []
    measurement = run["properties"]["metricResults"]["items"]["properties"]["measurements"]
    assert measurement["items"]["properties"]["at"]["format"] == "date-time"


@given(
    st.lists(
        st.sampled_from(["{", "}", "{{", "}}", " ", "a", "=", '"', "version", "pod", "\n"]),
        max_size=12,
    ).map("".join)
)
def test_the_template_rule_agrees_with_the_model(text: str) -> None:
    try:
        check_template(text)
        accepted = True
    except ValueError:
        accepted = False
    assert _rule_holds(TEMPLATE_RULE["rule"], text) == accepted


def test_a_run_reads_back_from_status_as_it_was() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    run = AnalysisRun(
        started_at=at,
        metric_results=[
            MetricResult(
                name="error-rate",
                count=1,
                failed=1,
                measurements=[
                    Measurement(
                        metric="error-rate",
                        phase=MeasurementPhase.FAILED,
                        value=0.09,
                        message="0.09 is outside [, 0.05]",
                        at=at,
                    )
                ],
            )
        ],
    )
    status = run.to_status()
    assert status["startedAt"] == "2026-01-02T03:04:05Z"
    assert status["metricResults"][0]["measurements"][0]["at"] == "2026-01-02T03:04:05Z"
    assert status["metricResults"][0]["consecutiveErrors"] == 0
    assert AnalysisRun.model_validate(status) == run


def test_a_metric_names_its_provider_when_both_are_missing() -> None:
    with pytest.raises(ValidationError, match="exactly one provider"):
        AnalysisMetric.model_validate({"name": "m", "thresholdRange": {"max": 1}})
