"""One registry watch per (tracking server, model), however many resources need it.

Each watched model is fetched once per interval (the shortest interval among the resources
watching it) with one `registered-models/get`, which carries every alias of the model. When
an alias map changes, or the registry becomes unreachable or reachable again, the resources
watching that model are woken. Resources resolve from the cached map, so their own passes
cost MLflow nothing; a webhook makes the watcher fetch at once (`refresh`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aliasop.interfaces import ModelKey, ResourceKey
from aliasop.models import ModelUri, Reason, RegistryProblem, ResolvedVersion
from aliasop.registry import MlflowRegistry

Aliases = dict[str, str]
logger = logging.getLogger(__name__)


@dataclass
class _Watch:
    intervals: dict[ResourceKey, float] = field(default_factory=dict)
    aliases: Aliases | RegistryProblem | None = None
    task: asyncio.Task[None] | None = None
    failures: int = 0

    @property
    def interval(self) -> float:
        return min(self.intervals.values())


class AliasWatcher:
    """Resolves aliases from a shared, regularly refreshed cache (an interfaces.Resolver)."""

    def __init__(self, registry: MlflowRegistry, wake: Callable[[ResourceKey], None]) -> None:
        self._registry = registry
        self._wake = wake
        self._watches: dict[ModelKey, _Watch] = {}
        self._models: dict[ResourceKey, ModelKey] = {}

    def watch(self, resource: ResourceKey, model: ModelKey, interval: float) -> None:
        """`resource` needs `model` checked at least every `interval` seconds (from now on)."""
        if self._models.get(resource, model) != model:
            self.unwatch(resource)
        self._models[resource] = model
        watch = self._watches.setdefault(model, _Watch())
        watch.intervals[resource] = interval
        if watch.task is None:
            watch.task = asyncio.create_task(self._poll(model, watch), name=f"watch {model}")

    def unwatch(self, resource: ResourceKey) -> None:
        key = self._models.pop(resource, None)
        watch = self._watches.get(key) if key is not None else None
        if key is None or watch is None:
            return
        watch.intervals.pop(resource, None)
        if not watch.intervals:
            del self._watches[key]
            if watch.task is not None:
                watch.task.cancel()

    async def model_changed(self, model: str, aliases: bool) -> int:
        """A webhook said `model` changed, on every server it is watched on: its `aliases`
        (fetch them now; resources whose alias moved are woken), or else something of its
        versions, such as a tag (wake every resource watching it). Returns how many watches
        that was."""
        keys = [key for key in self._watches if key[1] == model]
        if aliases:
            await asyncio.gather(*(self.refresh(key) for key in keys))
        else:
            for key in keys:
                for resource in list(self._watches[key].intervals):
                    self._wake(resource)
        return len(keys)

    async def resolve(self, tracking_uri: str, uri: ModelUri) -> ResolvedVersion:
        watch = self._watches.get((tracking_uri, uri.name))
        if watch is None or watch.aliases is None:
            await self.refresh((tracking_uri, uri.name))
            watch = self._watches.get((tracking_uri, uri.name))
        aliases = watch.aliases if watch is not None else None
        if aliases is None:  # not watched (any more): ask directly
            return await self._registry.resolve(tracking_uri, uri)
        if isinstance(aliases, RegistryProblem):
            raise aliases
        return await self._registry.resolve_from(tracking_uri, uri, aliases)

    async def refresh(self, key: ModelKey) -> None:
        """Fetch the alias map now; wake the resources watching it if it changed."""
        try:
            fetched: Aliases | RegistryProblem = await self._registry.aliases(*key)
        except RegistryProblem as problem:
            fetched = problem
        except Exception:  # a bug, or an answer nobody foresaw: report it, and poll on
            logger.exception(f"reading the aliases of {key[1]!r} at {key[0]} failed")
            fetched = RegistryProblem(
                Reason.REGISTRY_UNAVAILABLE,
                "the operator could not read MLflow's answer (its log says why)",
            )
        watch = self._watches.get(key)
        if watch is None:
            return
        watch.failures = (
            watch.failures + 1
            if isinstance(fetched, RegistryProblem) and fetched.kind is Reason.REGISTRY_UNAVAILABLE
            else 0
        )
        previous, watch.aliases = watch.aliases, fetched
        if previous is not None and fetched != previous:
            for resource in list(watch.intervals):
                self._wake(resource)

    async def _poll(self, key: ModelKey, watch: _Watch) -> None:
        last = time.monotonic()
        while True:
            delay = watch.interval
            if watch.failures:  # retry sooner after a failure, backing off up to the interval
                delay = min(delay, 2.0 ** (watch.failures - 1))
            await asyncio.sleep(max(0.0, last + delay - time.monotonic()))
            last = time.monotonic()
            await self.refresh(key)
