"""Wiring: the one place where the registry, the cluster client, the clock and the reconciler
are chosen and put together, started and stopped."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from aliasop.analysis_providers import HttpMetricProvider
from aliasop.builders import ServingDefaults
from aliasop.clock import SystemClock
from aliasop.endpoints import WEBHOOK_PATH, build_app, serve
from aliasop.interfaces import Reporter, Resolver, ResourceKey
from aliasop.kube import Cluster
from aliasop.leader import LeaderElector, LeaseConfig
from aliasop.memory import find_malloc_trim, trim_periodically
from aliasop.metrics import LEADER, RECONCILE_SECONDS
from aliasop.notifier import Notifier, NotifyingReporter, load_receivers
from aliasop.reconciler import Reconciler, Tracker
from aliasop.registry import MlflowRegistry
from aliasop.scheduler import Scheduler
from aliasop.settings import Settings
from aliasop.sharding import lease_name, selector_keys
from aliasop.watcher import AliasWatcher
from aliasop.webhooks import DeliveryVerifier

# The namespace a pod runs in, as its ServiceAccount's token volume tells.
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

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
    measurer: HttpMetricProvider  # of canary analyses
    notifier: Notifier | None = None  # None: no notification receivers
    elector: LeaderElector | None = None  # None: the one replica, always writing
    _http: web.AppRunner | None = None
    _trimming: asyncio.Task[None] | None = None
    _electing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve /metrics and webhooks, start passes (a standby once it leads), and trim
        memory now and then."""
        settings = self.settings
        if settings.http_port:
            secret = settings.webhook_secret.get_secret_value()
            verifier = (
                DeliveryVerifier(secret, settings.webhook_tolerance_seconds) if secret else None
            )
            app = build_app(self.resolver.model_changed, verifier, self.elector)
            self._http = await serve(app, settings.http_port)
        if self.elector is None:
            self.start_leading()
        else:
            self._electing = asyncio.create_task(self.elector.run(), name="leader election")
        trim = find_malloc_trim()
        if settings.memory_trim_seconds and trim is not None:
            self._trimming = asyncio.create_task(
                trim_periodically(trim, settings.memory_trim_seconds)
            )

    def start_leading(self) -> None:
        """Run passes: every resource followed so far gets one at once, from what the API
        server has of it now."""
        LEADER.set(1)
        if self.notifier is not None:
            self.notifier.start()
        self.reconciler.read_afresh()
        self.scheduler.start(self._timed_pass)

    async def _timed_pass(self, key: ResourceKey) -> float:
        with RECONCILE_SECONDS.time():
            return await self.reconciler.run_pass(key)

    async def stop(self) -> None:
        """Abandon the passes in flight (the next leader's passes redo what they left
        undone), then hand the Lease over."""
        if self._electing is not None:
            self._electing.cancel()
        self.scheduler.stop()
        self.reconciler.stop()  # untracks every resource: the resolver's polls end too
        if self.elector is not None:
            await self.elector.release()
        await self.registry.aclose()
        await self.measurer.aclose()
        if self.notifier is not None:
            await self.notifier.aclose()
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
        own_servers=[settings.tracking_uri],
        origin_concurrency=settings.registry_origin_concurrency,
        slot_wait_seconds=settings.registry_slot_wait_seconds,
        max_response_bytes=settings.registry_max_response_bytes,
    )
    scheduler: Scheduler[ResourceKey] = Scheduler()
    resolver = (make_resolver or AliasWatcher)(registry, scheduler.wake)
    # Connected at kopf's login (handlers.login), with the same credentials as kopf.
    cluster = Cluster(
        settings.api_concurrency, settings.report_concurrency, settings.api_timeout_seconds
    )
    measurer = HttpMetricProvider(settings.analysis_allowed_hosts)
    receivers = load_receivers(settings.notification_receivers_file)
    notifier = Notifier(receivers) if receivers else None
    reporter: Reporter = cluster if notifier is None else NotifyingReporter(cluster, notifier)
    reconciler = Reconciler(
        Tracker(scheduler, resolver, cluster),
        resolver,
        facts=registry,
        children=cluster,
        reporter=reporter,
        clock=SystemClock(),
        defaults=ServingDefaults(
            image=settings.serving_image,
            tracking_uri=settings.tracking_uri,
            mlflow_ui_url=settings.mlflow_ui_url,
        ),
        measurer=measurer,
        writes=registry if settings.registry_write_back else None,
        write_grants=settings.registry_write_grants,
        concurrency=settings.api_concurrency,
        status_refresh_seconds=settings.status_refresh_seconds,
        retry_backoff_max_seconds=settings.retry_backoff_max_seconds,
        shard_label_keys=selector_keys(settings.watch_label_selector),
    )
    runtime = Runtime(
        settings=settings,
        registry=registry,
        resolver=resolver,
        cluster=cluster,
        scheduler=scheduler,
        reconciler=reconciler,
        measurer=measurer,
        notifier=notifier,
    )
    if settings.leader_elect:
        elector = LeaderElector(
            lease_config(settings), cluster, runtime.start_leading, on_lost=_exit_at_once
        )
        cluster.fence = registry.fence = elector.fence
        runtime.elector = elector
    return runtime


def lease_config(settings: Settings) -> LeaseConfig:
    """The Lease of this operator (or shard), with the defaults its settings leave open."""
    namespace = settings.leader_elect_namespace
    if not namespace:
        in_pod = POD_NAMESPACE_FILE.is_file()
        namespace = POD_NAMESPACE_FILE.read_text().strip() if in_pod else "default"
    address, port = settings.advertise_address, settings.http_port
    return LeaseConfig(
        namespace=namespace,
        name=settings.leader_elect_lease_name or lease_name(settings.watch_label_selector),
        identity=settings.leader_elect_identity or f"{socket.gethostname()}_{uuid.uuid4()}",
        lease_duration=settings.leader_elect_lease_duration_seconds,
        renew_deadline=settings.leader_elect_renew_deadline_seconds,
        retry_period=settings.leader_elect_retry_period_seconds,
        webhook_url=f"http://{address}:{port}{WEBHOOK_PATH}" if address and port else "",
    )


def _exit_at_once() -> None:
    """A leader that lost its Lease exits, as controller-runtime's do: it must not write
    again, and starting afresh (as a standby) is the simple way back."""
    logging.shutdown()
    os._exit(1)
