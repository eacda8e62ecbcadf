"""The shared watcher's logic, with a stand-in for the MLflow client (no I/O)."""

import asyncio

from aliasop.models import ModelUri, ProblemKind, RegistryProblem, ResolvedVersion
from aliasop.watcher import AliasWatcher

SERVER = "http://mlflow:5000"


class FakeRegistry:
    def __init__(self) -> None:
        self.aliases_by_model: dict[str, dict[str, str] | RegistryProblem] = {
            "bikes": {"champion": "1"}
        }
        self.requests = 0

    async def aliases(self, tracking_uri: str, model: str) -> dict[str, str]:
        self.requests += 1
        answer = self.aliases_by_model[model]
        if isinstance(answer, RegistryProblem):
            raise answer
        return dict(answer)

    async def resolve_from(
        self, tracking_uri: str, uri: ModelUri, aliases: dict[str, str]
    ) -> ResolvedVersion:
        return ResolvedVersion(aliases[uri.alias], run_id="r")


async def test_many_followers_of_one_model_cost_one_request_per_interval() -> None:
    registry = FakeRegistry()
    woken: list[tuple[str, str]] = []
    watcher = AliasWatcher(registry, wake=lambda ns, name: woken.append((ns, name)))  # type: ignore[arg-type]
    uri = ModelUri.parse("models:/bikes@champion")
    for i in range(100):
        watcher.follow(("ns", f"m{i}"), (SERVER, "bikes"), interval=0.2)
    results = await asyncio.gather(*(watcher.resolve(SERVER, uri) for _ in range(100)))
    assert {r.version for r in results} == {"1"}
    assert registry.requests == 1  # the first resolutions share one fetch

    registry.aliases_by_model["bikes"] = {"champion": "2"}
    await asyncio.sleep(0.5)  # two intervals of the poll loop
    assert 2 <= registry.requests <= 4
    assert set(woken) == {("ns", f"m{i}") for i in range(100)}  # woken once the alias moved
    assert (await watcher.resolve(SERVER, uri)).version == "2"
    for i in range(100):
        watcher.unfollow(("ns", f"m{i}"))
    requests = registry.requests
    await asyncio.sleep(0.3)
    assert registry.requests == requests  # nobody follows: no more polling


async def test_an_outage_is_cached_and_reported_to_followers() -> None:
    registry = FakeRegistry()
    woken: list[tuple[str, str]] = []
    watcher = AliasWatcher(registry, wake=lambda ns, name: woken.append((ns, name)))  # type: ignore[arg-type]
    watcher.follow(("ns", "a"), (SERVER, "bikes"), interval=0.1)
    uri = ModelUri.parse("models:/bikes@champion")
    await watcher.resolve(SERVER, uri)
    registry.aliases_by_model["bikes"] = RegistryProblem(ProblemKind.REGISTRY_UNAVAILABLE, "down")
    await asyncio.sleep(0.25)
    assert woken == [("ns", "a")]
    try:
        await watcher.resolve(SERVER, uri)
    except RegistryProblem as problem:
        assert problem.kind is ProblemKind.REGISTRY_UNAVAILABLE
    else:
        raise AssertionError("the outage should be reported")
    watcher.unfollow(("ns", "a"))


async def test_a_follower_moving_to_another_model_leaves_the_old_watch() -> None:
    registry = FakeRegistry()
    registry.aliases_by_model["trains"] = {"champion": "7"}
    watcher = AliasWatcher(registry, wake=lambda ns, name: None)  # type: ignore[arg-type]
    watcher.follow(("ns", "a"), (SERVER, "bikes"), interval=60)
    watcher.follow(("ns", "a"), (SERVER, "trains"), interval=60)
    assert await watcher.refresh_model("bikes") == 0
    assert await watcher.refresh_model("trains") == 1
    watcher.unfollow(("ns", "a"))
