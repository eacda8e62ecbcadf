"""Leader election on fakes: the Lease's rules, who writes when, and what a lost Lease does."""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

import pytest

from aliasop.interfaces import ApiError, NotLeading
from aliasop.leader import (
    LEADER_URL_ANNOTATION,
    LeaderElector,
    LeaseConfig,
    claimed,
    held_by_another,
    released,
)

NOW = datetime.datetime(2026, 12, 2, 9, 0, tzinfo=datetime.UTC)


def config(identity: str, **timings: float) -> LeaseConfig:
    return LeaseConfig(
        namespace="aliasop-system",
        name="aliasop",
        identity=identity,
        lease_duration=timings.get("lease_duration", 15.0),
        renew_deadline=timings.get("renew_deadline", 10.0),
        retry_period=timings.get("retry_period", 2.0),
        webhook_url=f"http://{identity}:9090/webhooks/mlflow",
    )


class FakeLeases:
    """An API server's Lease store: writes must carry the resourceVersion they replace."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.unreachable = False

    def _check(self) -> None:
        if self.unreachable:
            raise ConnectionError("connection refused")

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        lease = copy.deepcopy(self.lease)
        await asyncio.sleep(0)  # another replica may read the same before either writes
        return lease

    async def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise ApiError(409, "already exists")
        return self._store(lease)

    async def replace_lease(
        self, namespace: str, name: str, lease: dict[str, Any]
    ) -> dict[str, Any]:
        self._check()
        if lease["metadata"].get("resourceVersion") != str(self.version):
            raise ApiError(409, "the object has been modified")
        return self._store(lease)

    def _store(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(lease)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    @property
    def holder(self) -> str | None:
        return (self.lease or {}).get("spec", {}).get("holderIdentity")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(
    identity: str, leases: FakeLeases, clock: Clock, **timings: float
) -> tuple[LeaderElector, list[str]]:
    happened: list[str] = []
    return (
        LeaderElector(
            config(identity, **timings),
            leases,
            on_started_leading=lambda: happened.append("leading"),
            on_lost=lambda: happened.append("lost"),
            monotonic=clock,
        ),
        happened,
    )


def test_a_lease_is_held_by_another_until_it_has_not_changed_for_its_duration() -> None:
    lease = claimed(None, config("a"), NOW)
    assert held_by_another(lease, "b", observed_at=100.0, now=114.9, duration=15.0)
    assert not held_by_another(lease, "b", observed_at=100.0, now=115.0, duration=15.0)
    assert not held_by_another(lease, "a", observed_at=100.0, now=101.0, duration=15.0)
    assert not held_by_another(released(lease, NOW), "b", 100.0, 101.0, 15.0)
    assert not held_by_another(None, "b", 100.0, 101.0, 15.0)


def test_a_claim_counts_transitions_and_keeps_the_acquire_time_on_renewal() -> None:
    first = claimed(None, config("a"), NOW)
    renewed = claimed(first, config("a"), NOW + datetime.timedelta(seconds=2))
    taken = claimed(renewed, config("b"), NOW + datetime.timedelta(seconds=20))

    assert first["spec"]["leaseTransitions"] == 1
    assert renewed["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert renewed["spec"]["renewTime"] == "2026-12-02T09:00:02.000000Z"
    assert renewed["spec"]["leaseTransitions"] == 1
    assert taken["spec"]["holderIdentity"] == "b"
    assert taken["spec"]["acquireTime"] == "2026-12-02T09:00:20.000000Z"
    assert taken["spec"]["leaseTransitions"] == 2
    assert (
        taken["metadata"]["annotations"][LEADER_URL_ANNOTATION] == "http://b:9090/webhooks/mlflow"
    )


async def test_only_one_of_two_replicas_leads_and_the_standby_writes_nothing() -> None:
    leases, clock = FakeLeases(), Clock()
    a, a_happened = elector("a", leases, clock)
    b, b_happened = elector("b", leases, clock)

    assert await a._claim()
    assert not await b._claim()

    assert a.leading and not b.leading
    assert a_happened == b_happened == [] and leases.holder == "a"  # run() reports, not _claim
    a.fence()
    with pytest.raises(NotLeading):
        b.fence()
    assert b.leader_url == "http://a:9090/webhooks/mlflow"
    assert a.leader_url is None  # a leader passes nothing on


async def test_a_standby_takes_over_once_the_lease_has_not_changed_for_its_duration() -> None:
    leases, clock = FakeLeases(), Clock()
    a, _ = elector("a", leases, clock)
    b, _ = elector("b", leases, clock)
    assert await a._claim()
    assert not await b._claim()  # b sees the Lease change now

    clock.now += 14.9  # a stopped renewing
    assert not await b._claim()
    clock.now += 0.1
    assert await b._claim()

    assert leases.holder == "b" and b.leading
    assert not a.leading  # its renew deadline passed long ago: it wrote nothing since


async def test_a_leader_that_cannot_renew_stops_at_its_renew_deadline() -> None:
    leases, clock = FakeLeases(), Clock()
    started, lost = asyncio.Event(), asyncio.Event()
    a = LeaderElector(config("a", retry_period=0.01), leases, started.set, lost.set, clock)
    running = asyncio.create_task(a.run())
    async with asyncio.timeout(5):
        await started.wait()
    leases.unreachable = True

    clock.now += 9.9
    assert a.leading
    clock.now += 0.1
    with pytest.raises(NotLeading):
        a.fence()  # at once, before the renew loop notices
    async with asyncio.timeout(5):
        await running
    assert lost.is_set()


async def test_a_released_lease_is_taken_by_the_standby_at_its_next_try() -> None:
    leases, clock = FakeLeases(), Clock()
    a, _ = elector("a", leases, clock)
    b, _ = elector("b", leases, clock)
    assert await a._claim()
    assert not await b._claim()

    await a.release()

    assert not a.leading
    assert leases.holder is None
    assert await b._claim()  # no wait for the lease duration


async def test_a_renewal_stored_after_it_was_abandoned_is_released_all_the_same() -> None:
    leases, clock = FakeLeases(), Clock()
    a, _ = elector("a", leases, clock)
    assert await a._claim()
    # A renewal the API server stored, but whose answer never reached `a` (cancelled at stop):
    renewed = claimed(copy.deepcopy(leases.lease), a.config, NOW)
    await leases.replace_lease("aliasop-system", "aliasop", renewed)

    await a.release()

    assert leases.holder is None


async def test_a_lease_another_replica_took_meanwhile_is_left_to_it() -> None:
    leases, clock = FakeLeases(), Clock()
    a, _ = elector("a", leases, clock)
    b, _ = elector("b", leases, clock)
    assert await a._claim()
    assert not await b._claim()
    clock.now += 16  # a's renewals stopped reaching the API server: b takes over
    assert await b._claim()

    clock.now -= 11  # a still leads by its own clock (its renew deadline is 10 s)
    await a.release()

    assert leases.holder == "b"


async def test_of_two_replicas_claiming_at_once_one_wins() -> None:
    leases, clock = FakeLeases(), Clock()
    a, _ = elector("a", leases, clock)
    b, _ = elector("b", leases, clock)

    results = await asyncio.gather(a._try_claim(1), b._try_claim(1))

    assert sorted(results) == [False, True]  # the second create was refused (409)
    assert [a.leading, b.leading] == results


async def test_a_lease_the_replica_may_not_touch_is_a_warning_not_a_silent_standby(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Forbidden(FakeLeases):
        async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
            raise ApiError(403, 'leases "aliasop-x" is forbidden')

    a, _ = elector("a", Forbidden(), Clock())

    assert not await a._try_claim(1)
    assert "may not read or write Lease aliasop-system/aliasop" in caplog.text
