"""Alias resolution against a real MLflow server: every answer and every failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import prometheus_client
import pytest
from mlflow import MlflowClient

from aliasop.models import ModelUri, Reason, RegistryProblem, ResolvedVersion
from aliasop.registry import MlflowRegistry
from aliasop_dev import bikes, local

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def registry() -> AsyncIterator[MlflowRegistry]:
    registry = MlflowRegistry(timeout_seconds=2, concurrency=4)
    yield registry
    await registry.aclose()


async def problem_of(registry: MlflowRegistry, tracking_uri: str, uri: str) -> RegistryProblem:
    with pytest.raises(RegistryProblem) as raised:
        await registry.resolve(tracking_uri, ModelUri.parse(uri))
    return raised.value


async def test_resolves_the_alias_to_its_version_and_run(
    registry: MlflowRegistry,
    mlflow_uri: str,
    model_name: str,
    two_versions: tuple[bikes.RegisteredVersion, bikes.RegisteredVersion],
) -> None:
    v1, v2 = two_versions
    uri = ModelUri.parse(f"models:/{model_name}@champion")
    assert await registry.resolve(mlflow_uri, uri) == ResolvedVersion(v1.version, v1.run_id)
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    assert await registry.resolve(mlflow_uri, uri) == ResolvedVersion(v2.version, v2.run_id)


async def test_each_failure_has_its_own_kind(
    registry: MlflowRegistry,
    mlflow_uri: str,
    model_name: str,
    two_versions: tuple[bikes.RegisteredVersion, bikes.RegisteredVersion],
) -> None:
    missing_model = await problem_of(registry, mlflow_uri, "models:/no-such-model@champion")
    assert missing_model.kind is Reason.MODEL_NOT_FOUND
    missing_alias = await problem_of(registry, mlflow_uri, f"models:/{model_name}@staging")
    assert missing_alias.kind is Reason.ALIAS_NOT_FOUND
    assert missing_alias.message == (
        f"model {model_name!r} has no alias 'staging' (aliases: champion)"
    )
    # Deleting a version silently drops the aliases that pointed at it.
    MlflowClient(tracking_uri=mlflow_uri).delete_model_version(model_name, two_versions[0].version)
    gone = await problem_of(registry, mlflow_uri, f"models:/{model_name}@champion")
    assert gone.kind is Reason.ALIAS_NOT_FOUND


async def test_an_unreachable_server_fails_fast(registry: MlflowRegistry) -> None:
    dead = f"http://127.0.0.1:{local.free_port()}"
    problem = await asyncio.wait_for(problem_of(registry, dead, "models:/m@a"), timeout=10)
    assert problem.kind is Reason.REGISTRY_UNAVAILABLE
    assert dead in problem.message


async def test_concurrent_lookups_of_one_model_share_a_request(
    mlflow_uri: str,
    model_name: str,
    two_versions: tuple[bikes.RegisteredVersion, bikes.RegisteredVersion],
) -> None:
    registry = MlflowRegistry(timeout_seconds=2, concurrency=4)
    uri = ModelUri.parse(f"models:/{model_name}@champion")
    before = requests_sent("registered-models/get")
    try:
        results = await asyncio.gather(*(registry.resolve(mlflow_uri, uri) for _ in range(50)))
    finally:
        await registry.aclose()
    assert {r.version for r in results} == {two_versions[0].version}
    assert requests_sent("registered-models/get") - before == 1


def requests_sent(endpoint: str) -> float:
    """MLflow requests this process sent to `endpoint`, whatever their answer, as the
    operator's /metrics counts them (aliasop_registry_requests_total)."""
    return sum(
        sample.value
        for family in prometheus_client.REGISTRY.collect()
        for sample in family.samples
        if sample.name == "aliasop_registry_requests_total"
        and sample.labels.get("endpoint") == endpoint
    )
