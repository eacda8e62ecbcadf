"""MlflowRegistry.signature_inputs against a stand-in MLflow (aiohttp on localhost) that
answers as MLflow 3.17 does (checked by hand against `mlflow server --artifacts-destination`):
`model-versions/get-download-uri` gives the version's artifact location, and
`/api/2.0/mlflow-artifacts/artifacts/<path>/MLmodel` serves its MLmodel file."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from pydantic import SecretStr

from aliasop.models import Reason, RegistryProblem
from aliasop.registry import MlflowRegistry, _proxied_artifact_url
from aliasop.settings import RegistryAccess
from aliasop.signatures import Unreadable

pytestmark = pytest.mark.timeout(20)

INPUTS = (
    '[{"type": "long", "name": "hour", "required": true}, '
    '{"type": "double", "name": "temperature", "required": false}]'
)
LOCATION = "mlflow-artifacts:/1/models/m-8b81c577013d4516af4882b3533304fb/artifacts"
# An MLmodel as MLflow writes it (abridged): `signature.inputs` is a JSON string.
MLMODEL = f"""\
artifact_path: {LOCATION}
flavors:
  python_function:
    loader_module: mlflow.sklearn
mlflow_version: 3.17.2
model_id: m-8b81c577013d4516af4882b3533304fb
signature:
  inputs: '{INPUTS}'
  outputs: '[{{"type": "tensor", "tensor-spec": {{"dtype": "float64", "shape": [-1]}}}}]'
  params: null
"""
NO_SIGNATURE = "artifact_path: x\nflavors: {}\nmlflow_version: 3.17.2\n"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts/"


@dataclass
class StandIn:
    """Version 1 at `location`; the one file it serves is `mlmodel` at LOCATION/MLmodel.
    Records each request's path and Authorization header. `artifact_status` answers the
    artifact GET instead, when not 200."""

    url: str = ""
    location: str = LOCATION
    mlmodel: str = MLMODEL
    artifact_status: int = 200
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path_qs, request.headers.get("Authorization")))
        await asyncio.sleep(0.01)  # long enough for concurrent callers to meet
        if request.path.endswith("model-versions/get-download-uri"):
            if request.query.get("version") != "1":
                return web.json_response({"error_code": "RESOURCE_DOES_NOT_EXIST"}, status=404)
            return web.json_response({"artifact_uri": self.location})
        if self.artifact_status != 200:
            return web.Response(status=self.artifact_status, text="You are not authenticated.")
        path = request.path.partition(ARTIFACTS)[2]
        if path != LOCATION.removeprefix("mlflow-artifacts:/") + "/MLmodel":  # the only file
            return web.json_response({"error_code": "RESOURCE_DOES_NOT_EXIST"}, status=404)
        return web.Response(text=self.mlmodel, content_type="text/plain")

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


@pytest.fixture
async def mlflow() -> AsyncIterator[StandIn]:
    stand_in = StandIn()
    app = web.Application()
    app.router.add_get("/{path:.*}", stand_in.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stand_in.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield stand_in
    await runner.cleanup()


@pytest.fixture
async def registry(mlflow: StandIn) -> AsyncIterator[MlflowRegistry]:
    access = RegistryAccess(token=SecretStr("t0ken"))
    made = MlflowRegistry(5, 4, access=access, credential_origins=[mlflow.url])
    yield made
    await made.aclose()


async def test_reads_the_inputs_once_per_version(mlflow: StandIn, registry: MlflowRegistry) -> None:
    assert await registry.signature_inputs(mlflow.url, "bikes", "1") == INPUTS
    assert mlflow.requests == [
        ("/api/2.0/mlflow/model-versions/get-download-uri?name=bikes&version=1", "Bearer t0ken"),
        (
            f"{ARTIFACTS}1/models/m-8b81c577013d4516af4882b3533304fb/artifacts/MLmodel",
            "Bearer t0ken",
        ),
    ]
    assert await registry.signature_inputs(mlflow.url, "bikes", "1") == INPUTS
    assert len(mlflow.requests) == 2  # versions are immutable: polling asks nothing more


async def test_concurrent_callers_share_the_requests(
    mlflow: StandIn, registry: MlflowRegistry
) -> None:
    answers = await asyncio.gather(
        *(registry.signature_inputs(mlflow.url, "bikes", "1") for _ in range(5))
    )
    assert answers == [INPUTS] * 5
    assert len(mlflow.requests) == 2


async def test_no_signature_is_none_and_kept(mlflow: StandIn, registry: MlflowRegistry) -> None:
    mlflow.mlmodel = NO_SIGNATURE
    assert await registry.signature_inputs(mlflow.url, "bikes", "1") is None
    assert await registry.signature_inputs(mlflow.url, "bikes", "1") is None
    assert len(mlflow.requests) == 2
    mlflow.mlmodel = "signature:\n  inputs: null\n  outputs: '[]'\n"
    assert await registry.signature_inputs(mlflow.url, "other", "1") is None


async def test_files_mlflow_does_not_serve_are_unreadable_not_a_registry_problem(
    mlflow: StandIn, registry: MlflowRegistry
) -> None:
    mlflow.location = "s3://bucket/1/models/m-1/artifacts"
    found = await registry.signature_inputs(mlflow.url, "bikes", "1")
    assert found == Unreadable(
        "keeps its files in s3: storage, which MLflow does not serve to aliasop "
        "(it reads mlflow-artifacts: locations only)"
    )
    assert len(mlflow.requests) == 1  # no artifact request, and none on the next call
    assert await registry.signature_inputs(mlflow.url, "bikes", "1") == found
    assert len(mlflow.requests) == 1

    mlflow.location = "/var/mlruns/1/models/m-1/artifacts"
    on_a_path = await registry.signature_inputs(mlflow.url, "bikes-on-disk", "1")
    assert isinstance(on_a_path, Unreadable) and "keeps its files on a path" in on_a_path.why


async def test_a_missing_mlmodel_or_a_garbled_one_is_unreadable(
    mlflow: StandIn, registry: MlflowRegistry
) -> None:
    mlflow.location = "mlflow-artifacts:/1/models/m-gone/artifacts"
    assert await registry.signature_inputs(mlflow.url, "bikes", "1") == Unreadable(
        "has no MLmodel file in mlflow-artifacts:/1/models/m-gone/artifacts"
    )
    mlflow.location, mlflow.mlmodel = LOCATION, "signature: [unclosed"
    garbled = await registry.signature_inputs(mlflow.url, "other", "1")
    assert garbled == Unreadable("has an MLmodel file that is not YAML")


async def test_refusals_and_silence_are_registry_problems_and_not_kept(
    mlflow: StandIn, registry: MlflowRegistry
) -> None:
    mlflow.artifact_status = 401
    with pytest.raises(RegistryProblem) as refused:
        await registry.signature_inputs(mlflow.url, "bikes", "1")
    assert refused.value.kind is Reason.REGISTRY_ACCESS_DENIED
    assert "refused the operator's credentials" in refused.value.message

    mlflow.artifact_status = 503
    with pytest.raises(RegistryProblem) as unavailable:
        await registry.signature_inputs(mlflow.url, "bikes", "1")
    assert unavailable.value.kind is Reason.REGISTRY_UNAVAILABLE
    assert f"MLflow at {mlflow.url} answered HTTP 503" in unavailable.value.message

    mlflow.artifact_status = 200  # a failure is not kept: the next call asks again
    assert await registry.signature_inputs(mlflow.url, "bikes", "1") == INPUTS

    with pytest.raises(RegistryProblem) as missing:
        await registry.signature_inputs(mlflow.url, "bikes", "7")
    assert missing.value.kind is Reason.VERSION_NOT_FOUND

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with pytest.raises(RegistryProblem) as silent:
        await registry.signature_inputs(nowhere, "bikes", "1")
    assert silent.value.kind is Reason.REGISTRY_UNAVAILABLE


async def test_credentials_go_to_trusted_servers_only(mlflow: StandIn) -> None:
    access = RegistryAccess(token=SecretStr("t0ken"))
    elsewhere = MlflowRegistry(5, 4, access=access, credential_origins=["http://mlflow.other:5000"])
    try:
        assert await elsewhere.signature_inputs(mlflow.url, "bikes", "1") == INPUTS
    finally:
        await elsewhere.aclose()
    assert [auth for _, auth in mlflow.requests] == [None, None]


async def test_a_tracking_uri_with_a_path_keeps_it(mlflow: StandIn) -> None:
    registry = MlflowRegistry(5, 4)
    try:
        assert await registry.signature_inputs(f"{mlflow.url}/mlflow/", "bikes", "1") == INPUTS
    finally:
        await registry.aclose()
    assert mlflow.paths[0].startswith("/mlflow/api/2.0/mlflow/model-versions/get-download-uri")
    assert mlflow.paths[1].startswith(f"/mlflow{ARTIFACTS}1/models/")


def test_artifact_urls_are_resolved_as_mlflow_resolves_them() -> None:
    # mlflow.store.artifact.mlflow_artifacts_repo.MlflowArtifactsRepository.resolve_uri
    assert (
        _proxied_artifact_url("http://mlflow:5000", "mlflow-artifacts:/1/m/artifacts", "MLmodel")
        == "http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/1/m/artifacts/MLmodel"
    )
    assert (
        _proxied_artifact_url("https://ml.example/prefix/", "mlflow-artifacts:/1/m", "MLmodel")
        == "https://ml.example/prefix/api/2.0/mlflow-artifacts/artifacts/1/m/MLmodel"
    )
    assert (  # a location naming its own artifact server
        _proxied_artifact_url("http://mlflow:5000", "mlflow-artifacts://art:8080/1/m", "MLmodel")
        == "http://art:8080/api/2.0/mlflow-artifacts/artifacts/1/m/MLmodel"
    )
    for elsewhere in ("s3://bucket/1/m", "gs://b/m", "file:///mlruns/1/m", "/mlruns/1/m", ""):
        assert _proxied_artifact_url("http://mlflow:5000", elsewhere, "MLmodel") is None
