"""Serving pods really serve the pinned version: the container the operator rendered, read
back from the API server, is run as a local process against the real MLflow server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aliasop_dev import bikes, local

from resources import Versions, View, predict_with

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("operator")]


def test_rendered_container_serves_the_pinned_version(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    tmp_path: Path,
) -> None:
    v1, v2 = two_versions
    bikes_view = serving_v1(replicas=1, serving={"port": local.free_port()})
    first = bikes_view.pod()
    assert f"models:/{model_name}/{v1.version}" in first["initContainers"][0]["args"]
    assert predict_with(first, v1.input_example, tmp_path / "v1") == pytest.approx(v1.predictions)

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    bikes_view.wait_serving(v2.version)
    second = bikes_view.pod()
    assert f"models:/{model_name}/{v2.version}" in second["initContainers"][0]["args"]
    assert predict_with(second, v2.input_example, tmp_path / "v2") == pytest.approx(v2.predictions)


def test_a_failed_download_stops_the_pod_before_its_server_starts(
    two_versions: Versions, model_name: str, serving_v1: Callable[..., View], tmp_path: Path
) -> None:
    pod = serving_v1(replicas=1).pod()
    download = pod["initContainers"][0]
    download["args"] = [
        f"models:/{model_name}/404" if arg.startswith("models:/") else arg
        for arg in download["args"]
    ]  # a version the registry does not have, as if it were deleted since

    with pytest.raises(RuntimeError, match="init container download exited 1") as failure:
        local.serving_pod(pod, tmp_path)
    assert "RESOURCE_DOES_NOT_EXIST" in str(failure.value)


def test_credentials_reach_pods_only_through_env_from(
    two_versions: Versions,
    model_name: str,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
    k8s: client.ApiClient,
    operator: local.LocalProcess,
) -> None:
    v1, _ = two_versions
    secret_value = "s3cr3t-Pa55word-for-the-test"
    bikes_view = view("bikes")
    client.CoreV1Api(k8s).create_namespaced_secret(
        bikes_view.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="mlflow-creds"),
            string_data={
                "MLFLOW_TRACKING_USERNAME": "svc-serving",
                "MLFLOW_TRACKING_PASSWORD": secret_value,
            },
        ),
    )
    mdeps(
        "bikes",
        model=f"models:/{model_name}@champion",
        replicas=1,
        pollIntervalSeconds=5,
        serving={"credentialsSecret": "mlflow-creds"},
    )
    bikes_view.wait_serving(v1.version)
    pod = bikes_view.pod()
    container = pod["containers"][0]
    assert pod["initContainers"][0]["envFrom"] == [{"secretRef": {"name": "mlflow-creds"}}]
    assert "envFrom" not in container  # the download needs them, the server does not

    deployment = client.ApiClient().sanitize_for_serialization(bikes_view.deployment())
    pod_metadata = deployment["spec"]["template"]["metadata"]
    events = bikes_view.core.list_namespaced_event(bikes_view.namespace).items
    exposed = {
        "labels and annotations": json.dumps([deployment["metadata"], pod_metadata]),
        "container env": json.dumps(container.get("env")),
        "status": json.dumps(bikes_view.status()),
        "events": json.dumps([e.message for e in events]),
        "operator log": operator.tail(100_000),
    }
    for where, text in exposed.items():
        assert secret_value not in text, f"secret leaked into {where}"
