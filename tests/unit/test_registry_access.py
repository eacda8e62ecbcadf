"""MlflowRegistry's credentials and TLS against a stand-in MLflow (aiohttp on localhost): what
it sends, to whom, and what a 401 or 403 is reported as. The real basic-auth MLflow server is
in tests/integration/test_registry_auth.py."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from aliasop.models import ModelUri, Reason, RegistryProblem
from aliasop.registry import MlflowRegistry
from aliasop.settings import RegistryAccess

pytestmark = pytest.mark.timeout(20)

BIKES = ModelUri("bikes", "champion")
MODEL = {"registered_model": {"aliases": [{"alias": "champion", "version": "1"}]}}


@dataclass
class StandIn:
    """A registry that answers `status` and `body`, and records each Authorization header."""

    url: str = ""
    authorizations: list[str | None] = field(default_factory=list)
    status: int = 200
    body: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.authorizations.append(request.headers.get("Authorization"))
        if self.status != 200:
            return web.Response(status=self.status, text=self.body)
        if request.path.endswith("registered-models/get"):
            return web.json_response(MODEL)
        return web.json_response({"model_version": {"status": "READY", "run_id": "r1"}})


async def serve(stand_in: StandIn, tls: ssl.SSLContext | None = None) -> web.AppRunner:
    app = web.Application()
    app.router.add_get("/{path:.*}", stand_in.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    scheme = "https" if tls else "http"
    stand_in.url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    return runner


@pytest.fixture
async def mlflow() -> AsyncIterator[StandIn]:
    stand_in = StandIn()
    runner = await serve(stand_in)
    yield stand_in
    await runner.cleanup()


Registry = Callable[..., MlflowRegistry]


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    made: list[MlflowRegistry] = []

    def make(access: RegistryAccess, origins: list[str]) -> MlflowRegistry:
        made.append(MlflowRegistry(5, 4, access=access, credential_origins=origins))
        return made[-1]

    yield make
    for one in made:
        await one.aclose()


async def test_basic_auth_and_tokens_go_to_the_trusted_server_only(
    mlflow: StandIn, registry: Registry
) -> None:
    basic = RegistryAccess(username="reader", password=SecretStr("s3cret"))
    await registry(basic, [mlflow.url]).resolve(mlflow.url, BIKES)
    assert mlflow.authorizations[0] == "Basic cmVhZGVyOnMzY3JldA=="  # reader:s3cret

    token = RegistryAccess(token=SecretStr("t0ken"), username="ignored")
    await registry(token, [mlflow.url]).resolve(mlflow.url, BIKES)
    assert mlflow.authorizations[-1] == "Bearer t0ken"

    mlflow.authorizations.clear()
    await registry(token, ["http://mlflow.elsewhere:5000"]).resolve(mlflow.url, BIKES)
    assert set(mlflow.authorizations) == {None}  # another server: no credentials


async def test_refusals_are_reported_as_access_denied_with_what_to_do(
    mlflow: StandIn, registry: Registry
) -> None:
    reader = registry(RegistryAccess(username="reader"), [mlflow.url])

    async def problem() -> RegistryProblem:
        with pytest.raises(RegistryProblem) as raised:
            await reader.resolve(mlflow.url, BIKES)
        return raised.value

    mlflow.status, mlflow.body = 401, "You are not authenticated."
    refused = await problem()
    assert refused.kind is Reason.REGISTRY_ACCESS_DENIED
    assert "refused the operator's credentials" in refused.message
    mlflow.status, mlflow.body = 403, "Permission denied"
    assert "may not read model 'bikes' (it needs READ)" in (await problem()).message
    mlflow.status, mlflow.body = 403, "Invalid Host header - possible DNS rebinding attack"
    assert "--allowed-hosts" in (await problem()).message
    mlflow.status = 503
    assert (await problem()).kind is Reason.REGISTRY_UNAVAILABLE
    assert "s3cret" not in repr(RegistryAccess(password=SecretStr("s3cret")))


def test_insecure_tls_and_a_ca_bundle_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        RegistryAccess(insecure_tls=True, server_cert_path="/ca.pem")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


async def test_tls_is_verified_with_the_given_ca_or_not_at_all_when_asked(
    certificate: tuple[Path, Path], registry: Registry
) -> None:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    stand_in = StandIn()
    runner = await serve(stand_in, tls)
    try:
        with pytest.raises(RegistryProblem, match="did not answer") as raised:
            await registry(RegistryAccess(), []).resolve(stand_in.url, BIKES)  # system CAs
        assert raised.value.kind is Reason.REGISTRY_UNAVAILABLE
        with_ca = RegistryAccess(server_cert_path=str(cert))
        assert (await registry(with_ca, []).resolve(stand_in.url, BIKES)).version == "1"
        insecure = RegistryAccess(insecure_tls=True)
        assert (await registry(insecure, []).resolve(stand_in.url, BIKES)).version == "1"
    finally:
        await runner.cleanup()
