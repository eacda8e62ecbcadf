"""Release gates against a real MLflow server, with real scikit-learn models whose signatures
differ: a version that drops an input is held back while the old one serves, one that adds an
optional input rolls out; an unapproved version waits until its tag is set."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from mlflow import MlflowClient

from aliasop_dev import bikes

from resources import View
from support import wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("operator")]


def condition(view: View, type_: str) -> dict[str, Any]:
    conditions = view.status().get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def test_a_version_that_drops_an_input_is_held_back_one_that_adds_an_optional_one_rolls(
    mlflow_uri: str, model_name: str, mdeps: Callable[..., Any], view: Callable[[str], View]
) -> None:
    v1 = bikes.train_and_register(mlflow_uri, model_name)
    v2 = bikes.train_and_register(mlflow_uri, model_name, drop=["wind"])
    v3 = bikes.train_and_register(mlflow_uri, model_name, optional=["pressure"])
    bikes.set_alias(mlflow_uri, model_name, "champion", v1.version)
    mdeps("bikes", model=f"models:/{model_name}@champion", replicas=1, pollIntervalSeconds=5)
    bikes_view = view("bikes")
    bikes_view.wait_serving(v1.version)

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    held = wait_for(
        lambda: (c := condition(bikes_view, "SignatureCompatible")).get("status") == "False" and c,
        30,
        message="SignatureCompatible=False",
    )
    assert "column 'wind' (double) is gone" in held["message"]
    assert condition(bikes_view, "Stalled")["reason"] == "SignatureIncompatible"
    wait_for(lambda: "SignatureIncompatible" in bikes_view.events(), 30, message="the Event")
    assert bikes_view.template_version() == v1.version  # the old one keeps serving
    assert bikes_view.pods_by_version() == {v1.version: 1}

    bikes.set_alias(mlflow_uri, model_name, "champion", v3.version)
    bikes_view.wait_serving(v3.version)
    assert condition(bikes_view, "SignatureCompatible")["status"] == "True"
    assert condition(bikes_view, "Stalled")["status"] == "False"


def approval(
    mlflow_uri: str, model_name: str, mdeps: Callable[..., Any], view: View, poll_seconds: int
) -> float:
    """Serve an approved v1, move the alias to an unapproved v2, check that it waits, approve
    it by setting its tag over REST; returns the seconds until v2's template was applied."""
    client = MlflowClient(tracking_uri=mlflow_uri)
    v1 = bikes.train_and_register(mlflow_uri, model_name)
    v2 = bikes.train_and_register(mlflow_uri, model_name, kind="hourly")
    client.set_model_version_tag(model_name, v1.version, "validation_status", "approved")
    bikes.set_alias(mlflow_uri, model_name, "champion", v1.version)
    mdeps(
        "bikes",
        model=f"models:/{model_name}@champion",
        replicas=1,
        pollIntervalSeconds=poll_seconds,
        rollout={"requiredTags": {"validation_status": "approved"}},
    )
    view.wait_serving(v1.version, timeout=60)

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    waiting = wait_for(
        lambda: (c := condition(view, "Approved")).get("status") == "False" and c,
        poll_seconds + 30,
        message="Approved=False",
    )
    assert waiting["reason"] == "WaitingForApproval"
    assert "validation_status=approved (is: unset)" in waiting["message"]
    assert condition(view, "Ready")["status"] == "True"  # v1 serves: kstatus Current
    assert condition(view, "Stalled")["status"] == "False"
    assert view.template_version() == v1.version

    approved_at = time.monotonic()
    client.set_model_version_tag(model_name, v2.version, "validation_status", "approved")
    wait_for(lambda: view.template_version() == v2.version, poll_seconds + 15, message="v2")
    took = time.monotonic() - approved_at
    view.wait_serving(v2.version)
    assert condition(view, "Approved")["status"] == "True"
    return took


@pytest.mark.usefixtures("mlflow_webhook")
def test_an_approval_tag_rolls_out_at_once_by_webhook(
    mlflow_uri: str, model_name: str, mdeps: Callable[..., Any], view: Callable[[str], View]
) -> None:
    # Polling every ten minutes: only the tag's webhook can make it within seconds.
    assert approval(mlflow_uri, model_name, mdeps, view("bikes"), poll_seconds=600) < 5


def test_an_approval_tag_rolls_out_within_an_interval_by_polling(
    mlflow_uri: str, model_name: str, mdeps: Callable[..., Any], view: Callable[[str], View]
) -> None:
    assert approval(mlflow_uri, model_name, mdeps, view("bikes"), poll_seconds=5) < 5 + 5
