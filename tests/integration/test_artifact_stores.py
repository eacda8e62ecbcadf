"""Models read straight from an object store, and custom pyfunc models with code of their own,
served by the container aliasop renders.

A real S3 server (versitygw, built by tests/tools/build-s3.sh) keeps the artifacts; a real MLflow
server whose default artifact root is `s3://` serves no artifacts (`--no-serve-artifacts`) and
holds no S3 credentials: the logging client writes to the bucket itself, and the serving
pod's download step reads from it itself, with the credentials of the ModelDeployment's
`spec.serving.credentialsSecret` (given to the process as the kubelet gives `envFrom`).

These tests need no Kubernetes cluster: the serving pod is rendered by aliasop.builders
(pure) and its containers run as local processes, as test_serving.py runs them after reading
them back from the API server.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient

from aliasop.builders import ServingDefaults, get_deployment
from aliasop.domain import Owner, PinnedVersion
from aliasop.models import ModelDeploymentSpec
from aliasop_dev import bikes, local

from resources import predict_with

pytestmark = pytest.mark.timeout(300)

BUCKET = "models"
SECRET = "s3-artifacts"  # the Secret spec.serving.credentialsSecret names
S3_VARIABLES = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="module", autouse=True)
def no_ambient_credentials() -> Iterator[None]:
    """No S3 settings in this process's environment, which every process it starts inherits:
    each gets them from where a test says. Without credentials boto3 would also ask the EC2
    instance metadata service (a link-local address, no host of ours): this is no EC2 instance."""
    with pytest.MonkeyPatch.context() as patch:
        for name in (*S3_VARIABLES, "AWS_PROFILE", "AWS_SESSION_TOKEN", "PYTHONPATH"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.S3Store]:
    """The S3 server, with one user and the bucket BUCKET."""
    port = local.free_port()
    store = local.S3Store(f"http://127.0.0.1:{port}", "aliasop-tests", uuid.uuid4().hex)
    server = local.s3_server(
        tmp_path_factory.mktemp("s3"), port, store.access_key, store.secret_key
    ).start()
    try:
        server.wait_ready(f"{store.endpoint}{local.S3_HEALTH_PATH}", timeout=30)
        store.create_bucket(BUCKET)
        yield store
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tracking_uri(store: local.S3Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MLflow with its artifact root in the bucket, proxying no artifacts, started without S3
    credentials."""
    port = local.free_port()
    server = local.mlflow_server(
        tmp_path_factory.mktemp("mlflow-s3"), port, default_artifact_root=f"s3://{BUCKET}/mlflow"
    )
    assert not set(S3_VARIABLES) & {*os.environ, *server.env}
    server.start()
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/health", timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def writing_to(store: local.S3Store) -> Iterator[None]:
    """This process as a client that logs models: the S3 credentials in its environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in store.client_env().items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def bikes_version(store: local.S3Store, tracking_uri: str) -> bikes.RegisteredVersion:
    with writing_to(store):
        return bikes.train_and_register(tracking_uri, "bikes-s3")


def render(tracking_uri: str, version: bikes.RegisteredVersion, **serving: Any) -> dict[str, Any]:
    """The Deployment aliasop renders for a ModelDeployment following `version`'s model."""
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": f"models:/{version.name}@champion",
            "serving": {"port": local.free_port(), **serving},
        }
    )
    return get_deployment(
        Owner(name=version.name, namespace="ml", uid=str(uuid.uuid4())),
        spec,
        PinnedVersion(version.version, version.run_id),
        ServingDefaults(image="aliasop-serving:test", tracking_uri=tracking_uri),
    )


def pod_of(deployment: Mapping[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_model_is_read_straight_from_the_bucket_with_the_secrets_credentials(
    store: local.S3Store,
    tracking_uri: str,
    bikes_version: bikes.RegisteredVersion,
    tmp_path: Path,
) -> None:
    run = MlflowClient(tracking_uri).get_run(bikes_version.run_id)
    assert run.info.artifact_uri.startswith(f"s3://{BUCKET}/mlflow/")
    model_files = [k for k in store.keys(BUCKET, "mlflow/") if k.endswith("/MLmodel")]
    assert model_files, "the logging client wrote no model into the bucket"
    # No artifact proxy: the tracking server hands out no artifacts itself.
    proxied = httpx.get(f"{tracking_uri}/api/2.0/mlflow-artifacts/artifacts", timeout=10)
    assert proxied.status_code == 503 and "--no-serve-artifacts" in proxied.text, proxied.text

    deployment = render(tracking_uri, bikes_version, credentialsSecret=SECRET)
    pod = pod_of(deployment)
    # The download step reads the bucket; the server gets the files, not the credentials.
    assert pod["initContainers"][0]["envFrom"] == [{"secretRef": {"name": SECRET}}]
    assert "envFrom" not in pod["containers"][0]
    rendered = json.dumps(deployment)
    for value in store.client_env().values():
        assert value not in rendered, "an S3 setting outside the Secret"

    predictions = predict_with(
        pod, bikes_version.input_example, tmp_path / "pod", secrets={SECRET: store.client_env()}
    )
    assert predictions == pytest.approx(bikes_version.predictions)


@pytest.mark.parametrize(
    ("remove", "replace", "error"),
    [
        (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), {}, "Unable to locate credentials"),
        (
            (),
            {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
            "The request signature we calculated does not match",
        ),
    ],
    ids=["no-keys-in-secret", "wrong-secret-key"],
)
def test_a_download_without_valid_credentials_fails_with_the_reason(
    store: local.S3Store,
    tracking_uri: str,
    bikes_version: bikes.RegisteredVersion,
    tmp_path: Path,
    remove: tuple[str, ...],
    replace: dict[str, str],
    error: str,
) -> None:
    data = {k: v for k, v in store.client_env().items() if k not in remove} | replace
    pod = pod_of(render(tracking_uri, bikes_version, credentialsSecret=SECRET))

    # The init container exits (no hang: serving_pod waits at most 300 s) before any server.
    with pytest.raises(RuntimeError, match="init container download exited") as failure:
        local.serving_pod(pod, tmp_path, secrets={SECRET: data})
    assert error in str(failure.value)


def test_custom_pyfunc_model_is_served_with_the_code_from_its_artifacts(
    store: local.S3Store, tracking_uri: str, tmp_path: Path
) -> None:
    with writing_to(store):
        version = bikes.log_fleet_model(tracking_uri, "fleet", fleet_size=300)
    # Its rules cap one of the example's estimates at the fleet's size: they really ran.
    assert 300 in version.predictions
    code = {k.rsplit("/code/", 1)[1] for k in store.keys(BUCKET, "mlflow/") if "/code/" in k}
    assert {"bike_fleet/__init__.py", "bike_fleet/model.py", "bike_fleet/rules.py"} <= code

    pod = pod_of(render(tracking_uri, version, credentialsSecret=SECRET))
    secrets = {SECRET: store.client_env()}
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    # The serving process cannot import bike_fleet by itself, from its environment or its
    # working directory: only the model's artifacts bring it.
    server = pod["containers"][0]
    serving_env = local.container_process(server, tmp_path / "probe.log", secrets, workdir).env
    probe = subprocess.run(
        [sys.executable, "-c", "import bike_fleet"],
        env={**os.environ, **serving_env},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode != 0 and "No module named 'bike_fleet'" in probe.stderr

    predictions = predict_with(pod, version.input_example, tmp_path / "pod", secrets, cwd=workdir)
    assert predictions == pytest.approx(version.predictions)
