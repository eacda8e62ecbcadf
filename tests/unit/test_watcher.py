"""The shared watcher's logic, with a stand-in for the MLflow client (no I/O)."""

import asyncio
from collections.abc import Callable

from aliasop.models import ModelUri, Reason, RegistryProblem, ResolvedVersion
from aliasop.watcher import AliasWatcher

SERVER = "http://mlflow:5000"


class FakeRegistry:
    def __init__(self) -> None:
        self.aliases_by_model: dict[str, dict[str, str] | RegistryProblem] = {
            "bikes": {"champion": "1"}
        }
        self.requests = 0
        self.changed = asyncio.Event()  # set at every request

    async def aliases(self, tracking_uri: str, model: str) -> dict[str, str]:
        self.requests += 1
        self.changed.set()
        answer = self.aliases_by_model[model]
        if isinstance(answer, RegistryProblem):
            raise answer
        return dict(answer)

    async def resolve_from(
        self, tracking_uri: str, uri: ModelUri, aliases: dict[str, str]
    ) -> ResolvedVersion:
        return ResolvedVersion(aliases[uri.alias], run_id="r")


class Woken(list[tuple[str, str]]):
    """The watcher's wake callback: records whom it woke, and sets `changed`."""

    def __init__(self, changed: asyncio.Event) -> None:
        super().__init__()
        self.changed = changed

    def __call__(self, resource: tuple[str, str]) -> None:
        self.append(resource)
        self.changed.set()


async def wait_until(condition: Callable[[], bool], changed: asyncio.Event) -> None:
    """Wait for `condition`, looking again each time `changed` is set."""
    async with asyncio.timeout(5):
        while not condition():
            changed.clear()  # no await since the check: nothing can have changed meanwhile
            await changed.wait()


async def test_many_resources_watching_one_model_cost_one_request_per_interval() -> None:
    registry = FakeRegistry()
    woken = Woken(registry.changed)
    watcher = AliasWatcher(registry, wake=woken)  # type: ignore[arg-type]
    uri = ModelUri.parse("models:/bikes@champion")
    for i in range(100):
        watcher.watch(("ns", f"m{i}"), (SERVER, "bikes"), interval=0.2)
    results = await asyncio.gather(*(watcher.resolve(SERVER, uri) for _ in range(100)))
    assert {r.version for r in results} == {"1"}
    assert registry.requests == 1  # the first resolutions share one fetch

    loop = asyncio.get_running_loop()
    started, before = loop.time(), registry.requests
    registry.aliases_by_model["bikes"] = {"champion": "2"}
    await wait_until(lambda: set(woken) == {("ns", f"m{i}") for i in range(100)}, woken.changed)
    await wait_until(lambda: registry.requests >= before + 2, woken.changed)  # keeps polling
    # One request per interval for all hundred resources, not one per resource.
    assert registry.requests - before <= (loop.time() - started) / 0.2 + 1
    assert (await watcher.resolve(SERVER, uri)).version == "2"
    for i in range(100):
        watcher.unwatch(("ns", f"m{i}"))
    requests = registry.requests
    await asyncio.sleep(0.3)  # an absence: one and a half intervals in which nothing happens
    assert registry.requests == requests  # nobody watches: no more polling


async def test_an_outage_is_cached_and_reported_to_its_watchers() -> None:
    registry = FakeRegistry()
    woken = Woken(registry.changed)
    watcher = AliasWatcher(registry, wake=woken)  # type: ignore[arg-type]
    watcher.watch(("ns", "a"), (SERVER, "bikes"), interval=0.1)
    uri = ModelUri.parse("models:/bikes@champion")
    await watcher.resolve(SERVER, uri)
    registry.aliases_by_model["bikes"] = RegistryProblem(Reason.REGISTRY_UNAVAILABLE, "down")
    await wait_until(lambda: bool(woken), woken.changed)
    failed_polls = registry.requests
    await wait_until(lambda: registry.requests >= failed_polls + 2, woken.changed)
    assert woken == [("ns", "a")]  # told once, not at every failed poll
    try:
        await watcher.resolve(SERVER, uri)
    except RegistryProblem as problem:
        assert problem.kind is Reason.REGISTRY_UNAVAILABLE
    else:
        raise AssertionError("the outage should be reported")
    watcher.unwatch(("ns", "a"))


async def test_a_resource_moving_to_another_model_leaves_the_old_watch() -> None:
    registry = FakeRegistry()
    registry.aliases_by_model["trains"] = {"champion": "7"}
    watcher = AliasWatcher(registry, wake=lambda resource: None)  # type: ignore[arg-type]
    watcher.watch(("ns", "a"), (SERVER, "bikes"), interval=60)
    watcher.watch(("ns", "a"), (SERVER, "trains"), interval=60)
    assert await watcher.model_changed("bikes", aliases=True) == 0
    assert await watcher.model_changed("trains", aliases=True) == 1
    watcher.unwatch(("ns", "a"))


async def test_a_tag_change_wakes_every_resource_watching_the_model() -> None:
    registry, woken = FakeRegistry(), Woken(asyncio.Event())
    watcher = AliasWatcher(registry, wake=woken)  # type: ignore[arg-type]
    watcher.watch(("ns", "a"), (SERVER, "bikes"), interval=60)
    watcher.watch(("ns", "b"), (SERVER, "bikes"), interval=60)
    watcher.watch(("ns", "c"), (SERVER, "trains"), interval=60)
    requests = registry.requests
    assert await watcher.model_changed("bikes", aliases=False) == 1
    assert sorted(woken) == [("ns", "a"), ("ns", "b")]
    assert registry.requests == requests  # the aliases did not change: nothing fetched
    for name in "abc":
        watcher.unwatch(("ns", name))
