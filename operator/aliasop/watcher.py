"""One registry watch per (tracking server, model), however many resources follow it.

Each watched model is fetched once per interval (the shortest interval among the resources
following it) with one `registered-models/get`, which carries every alias of the model. When
an alias map changes, or the registry becomes unreachable or reachable again, the resources
following that model are woken. Resources resolve from the cached map, so their own passes
cost MLflow nothing; a webhook makes the watcher fetch at once (`refresh`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aliasop.models import ModelUri, ProblemKind, RegistryProblem, ResolvedVersion
from aliasop.registry import MlflowRegistry

WatchKey = tuple[str, str]  # (tracking URI, registered model name)
Follower = tuple[str, str]  # (namespace, name) of a ModelDeployment
Aliases = dict[str, str]


class Resolver(Protocol):
    """How handlers resolve aliases; `follow` says which model each resource needs."""

    def follow(self, follower: Follower, key: WatchKey, interval: float) -> None: ...

    def unfollow(self, follower: Follower) -> None: ...

    async def resolve(self, tracking_uri: str, uri: ModelUri) -> ResolvedVersion: ...

    async def refresh_model(self, model: str) -> int: ...


class DirectResolver:
    """Every resolution asks MLflow itself: the naive mode, kept for comparison."""

    def __init__(self, registry: MlflowRegistry) -> None:
        self._registry = registry

    def follow(self, follower: Follower, key: WatchKey, interval: float) -> None:
        pass

    def unfollow(self, follower: Follower) -> None:
        pass

    async def resolve(self, tracking_uri: str, uri: ModelUri) -> ResolvedVersion:
        return await self._registry.resolve(tracking_uri, uri)

    async def refresh_model(self, model: str) -> int:
        return 0


@dataclass
class _Watch:
    intervals: dict[Follower, float] = field(default_factory=dict)
    aliases: Aliases | RegistryProblem | None = None
    task: asyncio.Task[None] | None = None
    failures: int = 0

    @property
    def interval(self) -> float:
        return min(self.intervals.values())


class AliasWatcher:
    """Resolves aliases from a shared, regularly refreshed cache."""

    def __init__(self, registry: MlflowRegistry, wake: Callable[[Follower], None]) -> None:
        self._registry = registry
        self._wake = wake
        self._watches: dict[WatchKey, _Watch] = {}
        self._keys: dict[Follower, WatchKey] = {}

    def follow(self, follower: Follower, key: WatchKey, interval: float) -> None:
        """`follower` needs `key` checked at least every `interval` seconds (from now on)."""
        if self._keys.get(follower, key) != key:
            self.unfollow(follower)
        self._keys[follower] = key
        watch = self._watches.setdefault(key, _Watch())
        watch.intervals[follower] = interval
        if watch.task is None:
            watch.task = asyncio.create_task(self._poll(key, watch), name=f"watch {key}")

    def unfollow(self, follower: Follower) -> None:
        key = self._keys.pop(follower, None)
        watch = self._watches.get(key) if key is not None else None
        if key is None or watch is None:
            return
        watch.intervals.pop(follower, None)
        if not watch.intervals:
            del self._watches[key]
            if watch.task is not None:
                watch.task.cancel()

    async def refresh_model(self, model: str) -> int:
        """Fetch `model` now on every server it is watched on (a webhook said it changed);
        returns how many watches that was."""
        keys = [key for key in self._watches if key[1] == model]
        await asyncio.gather(*(self.refresh(key) for key in keys))
        return len(keys)

    async def resolve(self, tracking_uri: str, uri: ModelUri) -> ResolvedVersion:
        watch = self._watches.get((tracking_uri, uri.name))
        if watch is None or watch.aliases is None:
            await self.refresh((tracking_uri, uri.name))
            watch = self._watches.get((tracking_uri, uri.name))
        aliases = watch.aliases if watch is not None else None
        if aliases is None:  # not followed (any more): ask directly
            return await self._registry.resolve(tracking_uri, uri)
        if isinstance(aliases, RegistryProblem):
            raise aliases
        return await self._registry.resolve_from(tracking_uri, uri, aliases)

    async def refresh(self, key: WatchKey) -> None:
        """Fetch the alias map now; wake the followers if it changed."""
        try:
            fetched: Aliases | RegistryProblem = await self._registry.aliases(*key)
        except RegistryProblem as problem:
            fetched = problem
        watch = self._watches.get(key)
        if watch is None:
            return
        watch.failures = (
            watch.failures + 1
            if isinstance(fetched, RegistryProblem)
            and fetched.kind is ProblemKind.REGISTRY_UNAVAILABLE
            else 0
        )
        previous, watch.aliases = watch.aliases, fetched
        if previous is not None and fetched != previous:
            for follower in list(watch.intervals):
                self._wake(follower)

    async def _poll(self, key: WatchKey, watch: _Watch) -> None:
        last = time.monotonic()
        while True:
            delay = watch.interval
            if watch.failures:  # retry sooner after a failure, backing off up to the interval
                delay = min(delay, 2.0 ** (watch.failures - 1))
            await asyncio.sleep(max(0.0, last + delay - time.monotonic()))
            last = time.monotonic()
            await self.refresh(key)
