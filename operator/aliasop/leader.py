"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's does it.

A replica leads while it holds the Lease and has renewed it within the renew deadline; only
the leader writes. A standby takes the Lease once it has seen no renewal for the lease
duration, by its own clock (`observed_at`: no two clocks are compared). The renew deadline is
shorter than the lease duration, so a leader stops before anyone may take over: one that
cannot renew in time exits, and every write checks `leading` just before it is sent (a frozen
process that wakes up writes nothing).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aliasop.interfaces import ApiError, NotLeading
from aliasop.models import GROUP

# The leader's webhook URL, which standbys forward deliveries to.
LEADER_URL_ANNOTATION = f"{GROUP}/leader-webhook-url"
_JITTER = 1.2  # a standby retries after up to 1.2 retry periods (client-go's factor)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float
    renew_deadline: float
    retry_period: float
    webhook_url: str = ""  # this replica's, advertised while it leads; "": none


class Leases(Protocol):
    """The Lease's I/O (kube.Cluster). Writes carry the resourceVersion they replace, so a
    concurrent one fails with a 409; they return the Lease as stored."""

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(
        self, namespace: str, name: str, lease: dict[str, Any]
    ) -> dict[str, Any]: ...


def _micro_time(at: datetime.datetime) -> str:
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def held_by_another(
    lease: dict[str, Any] | None, me: str, observed_at: float, now: float, duration: float
) -> bool:
    """Whether another replica holds `lease`: it names another holder and has changed within
    `duration` seconds of `now` by this replica's clock (`observed_at`, when it last saw it
    change). A released Lease names no holder."""
    holder = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
    return holder not in ("", me) and now < observed_at + duration


def claimed(
    lease: dict[str, Any] | None, config: LeaseConfig, now: datetime.datetime
) -> dict[str, Any]:
    """`lease` taken or renewed by this replica (a new one when there is none)."""
    lease = lease or {"metadata": {"name": config.name, "namespace": config.namespace}}
    spec = lease.get("spec") or {}
    renewing = spec.get("holderIdentity") == config.identity
    transitions = int(spec.get("leaseTransitions") or 0)
    annotations = {**(lease["metadata"].get("annotations") or {})}
    annotations[LEADER_URL_ANNOTATION] = config.webhook_url
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {**lease["metadata"], "annotations": annotations},
        "spec": {
            "holderIdentity": config.identity,
            "leaseDurationSeconds": max(1, round(config.lease_duration)),
            "acquireTime": spec.get("acquireTime") if renewing else _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions if renewing else transitions + 1,
        },
    }


def released(lease: dict[str, Any], now: datetime.datetime) -> dict[str, Any]:
    """`lease` given up: no holder, so a standby takes it at its next try."""
    spec = lease.get("spec") or {}
    annotations = {**(lease["metadata"].get("annotations") or {}), LEADER_URL_ANNOTATION: ""}
    return {
        **lease,
        "metadata": {**lease["metadata"], "annotations": annotations},
        "spec": {
            "leaseDurationSeconds": 1,
            "renewTime": _micro_time(now),
            "acquireTime": _micro_time(now),
            "leaseTransitions": int(spec.get("leaseTransitions") or 0),
        },
    }


class LeaderElector:
    """Takes and keeps the Lease (`run`), gives it up (`release`), and tells whether this
    replica may write now (`leading`, `fence`)."""

    def __init__(
        self,
        config: LeaseConfig,
        leases: Leases,
        on_started_leading: Callable[[], None],
        on_lost: Callable[[], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._leases = leases
        self._on_started_leading = on_started_leading
        self._on_lost = on_lost
        self._monotonic = monotonic
        self._observed: dict[str, Any] | None = None  # the Lease as last seen
        self._observed_at = 0.0  # when it last changed, by this replica's clock
        self._renewed_at: float | None = None  # when the last successful renewal was sent

    @property
    def leading(self) -> bool:
        return (
            self._renewed_at is not None
            and self._monotonic() < self._renewed_at + self.config.renew_deadline
        )

    @property
    def leader_url(self) -> str | None:
        """The leader's webhook URL as its Lease advertises it; None: no leader known."""
        if self._observed is None or self.leading:
            return None
        annotations = self._observed.get("metadata", {}).get("annotations") or {}
        return annotations.get(LEADER_URL_ANNOTATION) or None

    def fence(self) -> None:
        """Raise NotLeading unless this replica may write now: called before every write."""
        if not self.leading:
            raise NotLeading(f"not the leader (Lease {self._lease_ref})")

    async def run(self) -> None:
        """Stand by until the Lease is ours, lead, and call `on_lost` once it cannot be
        renewed within the renew deadline."""
        config = self.config
        _log.info(f"standing by for Lease {self._lease_ref} as {config.identity}")
        while True:  # the Lease changes on the API server: there is nothing to wait on
            if await self._try_claim(config.renew_deadline):
                break
            await asyncio.sleep(config.retry_period * random.uniform(1.0, _JITTER))
        _log.info(f"leading: holding Lease {self._lease_ref}")
        self._on_started_leading()
        while True:
            await asyncio.sleep(config.retry_period)
            while not await self._try_claim(self._seconds_left()):
                if not self.leading:
                    _log.error(
                        f"lost Lease {self._lease_ref}: not renewed within "
                        f"{config.renew_deadline:g}s; stopping"
                    )
                    self._on_lost()
                    return
                await asyncio.sleep(min(config.retry_period, self._seconds_left()))

    async def release(self) -> None:
        """Give the Lease up, if held, so that a standby takes over at once. Bounded by the
        renew deadline, so that it cannot use up a pod's termination grace period."""
        if not self.leading or self._observed is None:
            return
        self._renewed_at = None  # no write of ours goes out from here on
        try:
            async with asyncio.timeout(self.config.renew_deadline):
                released_now = await self._release(self._observed)
        except (ApiError, OSError, TimeoutError) as exc:
            _log.warning(f"could not release Lease {self._lease_ref}: {exc}")
            return
        if released_now:
            _log.info(f"released Lease {self._lease_ref}")

    async def _release(self, lease: dict[str, Any]) -> bool:
        """False when another replica holds the Lease by now."""
        config = self.config
        now = datetime.datetime.now(datetime.UTC)
        try:
            await self._leases.replace_lease(config.namespace, config.name, released(lease, now))
            return True
        except ApiError as exc:
            if exc.status != 409:
                raise
        # A renewal cancelled in flight may have been stored after all: release what is there.
        stored = await self._leases.get_lease(config.namespace, config.name)
        if stored is None or (stored.get("spec") or {}).get("holderIdentity") != config.identity:
            return False
        await self._leases.replace_lease(config.namespace, config.name, released(stored, now))
        return True

    @property
    def _lease_ref(self) -> str:
        return f"{self.config.namespace}/{self.config.name}"

    def _seconds_left(self) -> float:
        """Until the renew deadline."""
        if self._renewed_at is None:
            return 0.0
        return max(0.0, self._renewed_at + self.config.renew_deadline - self._monotonic())

    async def _try_claim(self, seconds: float) -> bool:
        """One try to take or renew the Lease, given up after `seconds`; True when it is
        ours."""
        try:
            async with asyncio.timeout(seconds):
                return await self._claim()
        except ApiError as exc:
            if exc.status in (401, 403):  # RBAC: it would stand by for ever, say why
                _log.warning(f"may not read or write Lease {self._lease_ref}: {exc}")
            else:  # a 409: another replica wrote first
                _log.debug(f"Lease {self._lease_ref} not claimed: {exc}")
            return False
        except OSError as exc:
            _log.debug(f"Lease {self._lease_ref} not claimed: {exc}")
            return False

    async def _claim(self) -> bool:
        config = self.config
        lease = await self._leases.get_lease(config.namespace, config.name)
        now = self._monotonic()
        if lease != self._observed:
            self._observed, self._observed_at = lease, now
        if held_by_another(lease, config.identity, self._observed_at, now, config.lease_duration):
            return False
        claim = claimed(lease, config, datetime.datetime.now(datetime.UTC))
        if lease is None:
            stored = await self._leases.create_lease(config.namespace, claim)
        else:
            stored = await self._leases.replace_lease(config.namespace, config.name, claim)
        self._renewed_at = now
        self._observed, self._observed_at = stored, now
        return True
