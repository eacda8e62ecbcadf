"""The operator against a real MLflow server that asks for credentials: MLflow's basic-auth
app, where a new user may read nothing until granted. The operator runs as `aliasop-reader`
(MLFLOW_TRACKING_USERNAME and _PASSWORD, see conftest.operator) with READ on one model."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from aliasop_dev import bikes, local

from resources import READER, READER_PASSWORD, View
from support import wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("operator")]

ADMIN_PASSWORD = secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def auth_mlflow(
    auth_mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """The basic-auth server, and an admin client of its REST API."""
    port = int(auth_mlflow_uri.rsplit(":", 1)[1])
    server = local.mlflow_auth_server(tmp_path_factory.mktemp("mlflow-auth"), port, ADMIN_PASSWORD)
    server.start()
    try:
        server.wait_ready(f"{auth_mlflow_uri}/health", timeout=90)
        with httpx.Client(base_url=f"{auth_mlflow_uri}/api", auth=admin()) as api:
            api.post(
                "2.0/mlflow/users/create", json={"username": READER, "password": READER_PASSWORD}
            ).raise_for_status()
            yield api
    finally:
        server.stop()


def admin() -> httpx.BasicAuth:
    return httpx.BasicAuth("admin", ADMIN_PASSWORD)


def set_reader_password(api: httpx.Client, password: str) -> None:
    api.patch(
        "2.0/mlflow/users/update-password", json={"username": READER, "password": password}
    ).raise_for_status()


def reader_may_read(api: httpx.Client, model: str, allowed: bool) -> None:
    grant = {"username": READER, "resource_type": "registered_model", "resource_id": model}
    if allowed:
        response = api.post(
            "3.0/mlflow/users/permissions/grant", json={**grant, "permission": "READ"}
        )
    else:
        response = api.post("3.0/mlflow/users/permissions/revoke", json=grant)
    response.raise_for_status()


def stalled(view: View) -> dict[str, Any] | None:
    status = view.status()
    return next(
        (
            c
            for c in status.get("conditions", [])
            if c["type"] == "Stalled" and c["status"] == "True"
        ),
        None,
    )


def test_right_credentials_work_wrong_ones_are_reported_and_serving_goes_on(
    auth_mlflow: httpx.Client,
    auth_mlflow_uri: str,
    model_name: str,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The admin registers the model and gives the operator's user READ on it, nothing more.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    v1 = bikes.train_and_register(auth_mlflow_uri, model_name)
    bikes.set_alias(auth_mlflow_uri, model_name, "champion", v1.version)
    anonymous = httpx.get(
        f"{auth_mlflow_uri}/api/2.0/mlflow/registered-models/get", params={"name": model_name}
    )
    assert anonymous.status_code == 401  # the server really asks for credentials
    reader_may_read(auth_mlflow, model_name, True)

    mdeps(
        "bikes",
        model=f"models:/{model_name}@champion",
        trackingUri=auth_mlflow_uri,
        replicas=1,
        pollIntervalSeconds=5,
    )
    bikes_view = view("bikes")
    bikes_view.wait_serving(v1.version)

    set_reader_password(auth_mlflow, "not-what-the-operator-has")
    refused = wait_for(lambda: stalled(bikes_view), 30, message="Stalled on the credentials")
    assert refused["reason"] == "RegistryAccessDenied"
    assert "refused the operator's credentials" in refused["message"]
    assert READER_PASSWORD not in str(bikes_view.mdep())
    wait_for(lambda: "RegistryAccessDenied" in bikes_view.events(), 30, message="the Event")
    assert bikes_view.pods_by_version() == {v1.version: 1}  # serving goes on

    set_reader_password(auth_mlflow, READER_PASSWORD)
    bikes_view.wait_serving(v1.version, timeout=30)
    wait_for(lambda: stalled(bikes_view) is None, 30, message="the stall cleared")

    reader_may_read(auth_mlflow, model_name, False)
    denied = wait_for(lambda: stalled(bikes_view), 30, message="Stalled on the permission")
    assert f"may not read model {model_name!r} (it needs READ)" in denied["message"]
