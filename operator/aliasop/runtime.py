"""Wiring: the one place where the registry, the cluster client and the clock are chosen."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from aliasop.builders import ServingDefaults
from aliasop.clock import Clock, SystemClock
from aliasop.kube import Cluster
from aliasop.models import ModelDeploymentStatus
from aliasop.registry import MlflowRegistry
from aliasop.rollout import ObservedDeployment
from aliasop.scheduler import Scheduler
from aliasop.settings import Settings
from aliasop.watcher import AliasWatcher, DirectResolver, Follower, Resolver


@dataclass
class Followed:
    """What is kept of a followed ModelDeployment between its passes."""

    # apiVersion, kind, metadata (name, namespace, uid, generation) and spec as last watched:
    # not the whole object, whose managedFields alone are a few kilobytes.
    body: dict[str, Any]
    # Read from the object once: the watch catches up with our own status writes only later,
    # so from then on the status the last pass stored is the truth.
    status: ModelDeploymentStatus
    logger: kopf.Logger
    # The first pass writes its status even when only lastResolvedTime moved: it shows that
    # this operator instance has taken the resource over.
    refresh_seconds: float = 0.0
    failures: int = 0  # Kubernetes API failures in a row


@dataclass
class Runtime:
    settings: Settings
    registry: MlflowRegistry
    resolver: Resolver
    cluster: Cluster
    clock: Clock
    scheduler: Scheduler[Follower]
    # Passes reconciling at once: more than the API calls in flight would only queue, each
    # holding its copies of spec and status (the peak after a restart or a webhook for a
    # model many resources follow).
    passes: asyncio.Semaphore
    followed: dict[Follower, Followed] = field(default_factory=dict)
    # The children Deployments as kopf's index of them (handlers.deployments) last saw them;
    # kopf hands the index to handlers, and the first ModelDeployment event stores it here.
    deployments: Mapping[Follower, Iterable[ObservedDeployment]] = field(default_factory=dict)

    @property
    def defaults(self) -> ServingDefaults:
        return ServingDefaults(
            image=self.settings.serving_image, tracking_uri=self.settings.tracking_uri
        )

    def observed(self, key: Follower) -> ObservedDeployment | None:
        """The child Deployment of `key` as last watched; None when there is none (yet)."""
        return next(iter(self.deployments.get(key, [])), None)


def build_runtime(settings: Settings) -> Runtime:
    registry = MlflowRegistry(
        timeout_seconds=settings.registry_timeout_seconds,
        concurrency=settings.registry_concurrency,
    )
    scheduler: Scheduler[Follower] = Scheduler()
    resolver: Resolver = (
        AliasWatcher(registry, wake=scheduler.wake)
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
        scheduler=scheduler,
        passes=asyncio.Semaphore(settings.api_concurrency),
    )
