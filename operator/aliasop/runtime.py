"""Wiring: the one place where the registry, the cluster client, the clock and the reconciler
are chosen and put together, started and stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from aliasop.builders import ServingDefaults
from aliasop.clock import SystemClock
from aliasop.endpoints import build_app, serve
from aliasop.interfaces import Resolver, ResourceKey
from aliasop.kube import Cluster
from aliasop.memory import find_malloc_trim, trim_periodically
from aliasop.reconciler import Reconciler, Tracker
from aliasop.registry import MlflowRegistry
from aliasop.scheduler import Scheduler
from aliasop.settings import Settings
from aliasop.watcher import AliasWatcher
from aliasop.webhooks import DeliveryVerifier

# Builds the resolver from the registry client and the scheduler's wake-up (AliasWatcher;
# the benchmark passes a naive one for comparison).
ResolverFactory = Callable[[MlflowRegistry, Callable[[ResourceKey], None]], Resolver]


@dataclass
class Runtime:
    settings: Settings
    registry: MlflowRegistry
    resolver: Resolver
    cluster: Cluster
    scheduler: Scheduler[ResourceKey]
    reconciler: Reconciler
    _http: web.AppRunner | None = None
    _trimming: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve /metrics and webhooks, start passes, and trim memory now and then."""
        settings = self.settings
        if settings.http_port:
            secret = settings.webhook_secret.get_secret_value()
            verifier = (
                DeliveryVerifier(secret, settings.webhook_tolerance_seconds) if secret else None
            )
            app = build_app(self.resolver.model_changed, verifier)
            self._http = await serve(app, settings.http_port)
        self.scheduler.start(self.reconciler.run_pass)
        trim = find_malloc_trim()
        if settings.memory_trim_seconds and trim is not None:
            self._trimming = asyncio.create_task(
                trim_periodically(trim, settings.memory_trim_seconds)
            )

    async def stop(self) -> None:
        self.scheduler.stop()
        self.reconciler.stop()  # untracks every resource: the resolver's polls end too
        await self.registry.aclose()
        await self.cluster.aclose()
        if self._trimming is not None:
            self._trimming.cancel()
        if self._http is not None:
            await self._http.cleanup()


def build_runtime(settings: Settings, make_resolver: ResolverFactory | None = None) -> Runtime:
    """`make_resolver`: None for the registry watcher (AliasWatcher)."""
    registry = MlflowRegistry(
        timeout_seconds=settings.registry_timeout_seconds,
        concurrency=settings.registry_concurrency,
        access=settings.registry_access,
        credential_origins=settings.credential_origins,
        writer=settings.registry_writer,
    )
    scheduler: Scheduler[ResourceKey] = Scheduler()
    resolver = (make_resolver or AliasWatcher)(registry, scheduler.wake)
    # Connected at kopf's login (handlers.login), with the same credentials as kopf.
    cluster = Cluster(
        settings.api_concurrency, settings.report_concurrency, settings.api_timeout_seconds
    )
    reconciler = Reconciler(
        Tracker(scheduler, resolver, cluster),
        resolver,
        facts=registry,
        children=cluster,
        reporter=cluster,
        clock=SystemClock(),
        defaults=ServingDefaults(image=settings.serving_image, tracking_uri=settings.tracking_uri),
        writes=registry if settings.registry_write_back else None,
        concurrency=settings.api_concurrency,
        status_refresh_seconds=settings.status_refresh_seconds,
        retry_backoff_max_seconds=settings.retry_backoff_max_seconds,
    )
    return Runtime(
        settings=settings,
        registry=registry,
        resolver=resolver,
        cluster=cluster,
        scheduler=scheduler,
        reconciler=reconciler,
    )
