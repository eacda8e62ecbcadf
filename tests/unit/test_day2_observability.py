"""Per-resource metrics, the serving version's MLflow link, and the log formats."""

from __future__ import annotations

import json
import logging
from typing import Any

import kopf
import pytest
from prometheus_client import REGISTRY

from aliasop import __version__, metrics
from aliasop.builders import ServingDefaults, with_version_url
from aliasop.cli import configure_logging
from aliasop.models import ModelDeploymentSpec, ModelDeploymentStatus
from aliasop.settings import LogFormat, LogLevel

pytestmark = pytest.mark.timeout(10)
KEY = ("ml", "metrics-test")


def status(**fields: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(fields)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"namespace": KEY[0], "name": KEY[1], **labels})


def entry(version: str, outcome: str, finished: str | None = None) -> dict[str, Any]:
    return {
        "version": version,
        "reason": "AliasMoved",
        "startedAt": "2026-12-07T12:00:00Z",
        "finishedAt": finished,
        "outcome": outcome,
    }


def test_series_follow_the_status_and_go_with_the_resource() -> None:
    canary = status(
        phase="Progressing",
        servingVersion="3",
        targetVersion="4",
        aliasVersion="4",
        canary={
            "version": "4",
            "stableVersion": "3",
            "step": 2,
            "steps": 3,
            "weight": 25,
            "phase": "Paused",
            "stepStartedAt": "2026-12-07T12:00:00Z",
        },
        conditions=[
            {"type": "Ready", "status": "True", "reason": "Serving"},
            {"type": "Approved", "status": "False", "reason": "WaitingForApproval"},
        ],
    )
    metrics.observe_resource(KEY, "models:/bikes@champion", ModelDeploymentStatus(), canary)
    info = {"model": "bikes", "alias": "champion"}
    assert sample("aliasop_resource_info", **info, phase="Progressing") == 1
    assert sample("aliasop_resource_version", side="serving") == 3
    assert sample("aliasop_resource_version", side="canary") == 4
    assert sample("aliasop_canary_step") == 2
    assert sample("aliasop_canary_weight") == 25
    assert sample("aliasop_resource_condition", type="Approved") == 0
    assert sample("aliasop_resource_condition", type="Ready") == 1

    done = status(phase="Ready", servingVersion="4", targetVersion="4", aliasVersion="4")
    metrics.observe_resource(KEY, "models:/bikes@champion", canary, done)
    # The phase is a label: the old series goes, not two at once.
    assert sample("aliasop_resource_info", **info, phase="Progressing") is None
    assert sample("aliasop_resource_info", **info, phase="Ready") == 1
    assert sample("aliasop_resource_version", side="canary") is None
    assert sample("aliasop_canary_step") == 0
    assert sample("aliasop_resource_condition", type="Approved") is None

    metrics.forget_resource(KEY)
    exported = [
        s
        for family in REGISTRY.collect()
        for s in family.samples
        if s.labels.get("name") == KEY[1] and s.labels.get("namespace") == KEY[0]
    ]
    assert exported == []


def test_a_rollout_is_timed_once_when_it_ends() -> None:
    running = status(history=[entry("4", "Progressing")])
    ended = status(history=[entry("4", "Succeeded", "2026-12-07T12:01:30Z")])
    assert metrics.ended_rollouts(running, ended) == [("Succeeded", 90.0)]
    assert metrics.ended_rollouts(ended, ended) == []  # already counted
    before = (
        REGISTRY.get_sample_value(
            "aliasop_rollout_duration_seconds_count", {"outcome": "Succeeded"}
        )
        or 0.0
    )
    metrics.observe_resource(KEY, "not a model uri", running, ended)
    after = REGISTRY.get_sample_value(
        "aliasop_rollout_duration_seconds_count", {"outcome": "Succeeded"}
    )
    assert after == before + 1
    assert sample("aliasop_resource_info", model="", alias="", phase="Pending") == 1
    metrics.forget_resource(KEY)


def test_build_info() -> None:
    samples = [s for f in REGISTRY.collect() if f.name == "aliasop_build_info" for s in f.samples]
    assert [(s.labels["version"], s.value) for s in samples] == [(__version__, 1.0)]


def test_the_serving_version_links_to_its_mlflow_page() -> None:
    defaults = ServingDefaults(image="i", tracking_uri="http://mlflow.mlflow:5000")
    spec = ModelDeploymentSpec.model_validate({"model": "models:/cat.schema.bikes@champion"})
    linked = with_version_url(status(servingVersion="7"), spec, defaults)
    assert (
        linked.serving_version_url
        == "http://mlflow.mlflow:5000/#/models/cat.schema.bikes/versions/7"
    )
    public = ServingDefaults("i", "http://mlflow.mlflow:5000", mlflow_ui_url="https://ml.example/")
    assert (
        with_version_url(status(servingVersion="7"), spec, public).serving_version_url
        == "https://ml.example/#/models/cat.schema.bikes/versions/7"
    )
    own = ModelDeploymentSpec.model_validate(
        {"model": "models:/bikes@champion", "trackingUri": "https://other.example"}
    )
    assert with_version_url(status(servingVersion="1"), own, public).serving_version_url == (
        "https://other.example/#/models/bikes/versions/1"
    )
    assert with_version_url(status(), spec, defaults).serving_version_url is None


def test_json_logs_carry_the_resource(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(kopf, LogFormat.JSON, LogLevel.WARNING)
    try:
        logger = kopf.LocalObjectLogger(
            body=kopf.Body({"metadata": {"namespace": "ml", "name": "bikes"}}),
            settings=kopf.OperatorSettings(),
        )
        logger.info("not shown at WARNING")
        logger.warning("rollout failed")
        [line] = capsys.readouterr().err.splitlines()
        record = json.loads(line)
        assert record["message"] == "rollout failed"
        assert record["object"]["name"] == "bikes"
        assert record["severity"] == "warn"
    finally:
        root.handlers[:], root.level = handlers, level
