"""Wiring: the one place where the registry, the cluster client and the clock are chosen."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aliasop.builders import ServingDefaults
from aliasop.clock import Clock, SystemClock
from aliasop.kube import Cluster
from aliasop.registry import MlflowRegistry
from aliasop.settings import Settings
from aliasop.watcher import AliasWatcher, DirectResolver, Resolver


class Wakeups:
    """One event per followed resource, set to make its loop look again right away."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def register(self, namespace: str, name: str) -> asyncio.Event:
        return self._events.setdefault((namespace, name), asyncio.Event())

    def unregister(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)

    def wake(self, namespace: str, name: str) -> None:
        event = self._events.get((namespace, name))
        if event is not None:
            event.set()

    def __len__(self) -> int:
        return len(self._events)


@dataclass
class Runtime:
    settings: Settings
    registry: MlflowRegistry
    resolver: Resolver
    cluster: Cluster
    clock: Clock
    wakeups: Wakeups
    # Passes running at once: more than the API calls in flight would only queue, each
    # holding its copies of spec and status (the peak after a restart or a webhook for a
    # model many resources follow).
    passes: asyncio.Semaphore

    @property
    def defaults(self) -> ServingDefaults:
        return ServingDefaults(
            image=self.settings.serving_image, tracking_uri=self.settings.tracking_uri
        )


def build_runtime(settings: Settings) -> Runtime:
    registry = MlflowRegistry(
        timeout_seconds=settings.registry_timeout_seconds,
        concurrency=settings.registry_concurrency,
    )
    wakeups = Wakeups()
    resolver: Resolver = (
        AliasWatcher(registry, wake=wakeups.wake)
        if settings.registry_mode == "shared"
        else DirectResolver(registry)
    )
    return Runtime(
        settings=settings,
        registry=registry,
        resolver=resolver,
        # Connected at kopf's login (handlers.login), with the same credentials as kopf.
        cluster=Cluster(
            settings.api_concurrency, settings.report_concurrency, settings.api_timeout_seconds
        ),
        clock=SystemClock(),
        wakeups=wakeups,
        passes=asyncio.Semaphore(settings.api_concurrency),
    )
