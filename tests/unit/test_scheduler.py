"""aliasop.scheduler: when passes run, one at a time per key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from aliasop.scheduler import Scheduler

pytestmark = pytest.mark.timeout(10)


class Passes:
    """The work: records each pass, can be held open, returns `delay`."""

    def __init__(self, delay: float = 3600.0) -> None:
        self.delay = delay
        self.runs: list[str] = []
        self.running: set[str] = set()
        self.overlapped = False
        self.changed = asyncio.Event()
        self.release: asyncio.Event | None = None  # set: passes wait for it

    async def __call__(self, key: str) -> float:
        self.overlapped |= key in self.running
        self.running.add(key)
        self.runs.append(key)
        self.changed.set()
        try:
            if self.release is not None:
                await self.release.wait()
        finally:
            self.running.discard(key)
            self.changed.set()
        return self.delay

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


async def test_an_added_key_passes_at_once_then_after_its_delay() -> None:
    passes, scheduler = Passes(delay=0.05), Scheduler[str]()
    scheduler.start(passes)
    scheduler.add("a")
    await passes.until(lambda: passes.runs == ["a"])
    await passes.until(lambda: len(passes.runs) >= 3)  # again, after each 0.05 s delay
    scheduler.stop()


async def test_keys_added_before_start_pass_once_it_starts() -> None:
    passes, scheduler = Passes(), Scheduler[str]()
    scheduler.add("a")
    scheduler.add("b")
    await asyncio.sleep(0.05)  # an absence: nothing runs before start()
    assert passes.runs == []
    scheduler.start(passes)
    await passes.until(lambda: sorted(passes.runs) == ["a", "b"])
    scheduler.stop()


async def test_a_wake_cuts_the_wait_short() -> None:
    passes, scheduler = Passes(delay=3600), Scheduler[str]()
    scheduler.start(passes)
    scheduler.add("a")
    await passes.until(lambda: passes.runs == ["a"] and not passes.running)
    scheduler.wake("a")
    await passes.until(lambda: passes.runs == ["a", "a"])
    scheduler.wake("unknown")  # not added: nothing happens
    assert "unknown" not in scheduler and len(scheduler) == 1
    await asyncio.sleep(0.1)  # an absence: no pass of "unknown" runs, and "a" waits its delay
    assert passes.runs == ["a", "a"]
    scheduler.stop()


async def test_a_wake_during_a_pass_runs_one_more_pass_after_it_never_two_at_once() -> None:
    passes, scheduler = Passes(delay=3600), Scheduler[str]()
    passes.release = asyncio.Event()
    scheduler.start(passes)
    scheduler.add("a")
    await passes.until(lambda: passes.running == {"a"})
    scheduler.wake("a")
    scheduler.wake("a")  # several wakes during one pass make one more pass
    passes.release.set()
    await passes.until(lambda: passes.runs == ["a", "a"] and not passes.running)
    assert not passes.overlapped
    passes.release = asyncio.Event()  # a third pass would now be held open
    await asyncio.sleep(0.1)  # an absence: no third pass comes
    assert passes.runs == ["a", "a"]
    scheduler.stop()


async def test_a_dropped_key_passes_no_more_and_its_pass_in_flight_is_cancelled() -> None:
    passes, scheduler = Passes(delay=0.02), Scheduler[str]()
    passes.release = asyncio.Event()  # never set: the pass would hang without the cancel
    scheduler.start(passes)
    scheduler.add("a")
    await passes.until(lambda: passes.running == {"a"})
    scheduler.drop("a")
    await passes.until(lambda: not passes.running)
    scheduler.add("b")  # passes go on for other keys
    await passes.until(lambda: passes.runs == ["a", "b"])
    await asyncio.sleep(0.1)  # an absence, five delays long: "a" does not come back
    assert passes.runs.count("a") == 1 and "a" not in scheduler and len(scheduler) == 1
    scheduler.stop()


async def test_a_pass_may_drop_its_own_key() -> None:
    scheduler = Scheduler[str]()
    finished = asyncio.Event()
    calls: list[str] = []

    async def gone(key: str) -> float:
        calls.append(key)
        scheduler.drop(key)  # e.g. the API server answered 404
        await asyncio.sleep(0)  # not cancelled by its own drop
        finished.set()
        return 0.0

    scheduler.start(gone)
    scheduler.add("a")
    await asyncio.wait_for(finished.wait(), 5)
    await asyncio.sleep(0.05)  # an absence: no pass after it, though it asked for one at once
    assert calls == ["a"] and "a" not in scheduler
    scheduler.stop()


async def test_a_failing_pass_is_logged_and_tried_again_later(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aliasop.scheduler.RETRY_AFTER_UNEXPECTED_SECONDS", 0.05)
    calls: list[str] = []
    retried = asyncio.Event()

    async def flaky(key: str) -> float:
        calls.append(key)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        retried.set()
        return 3600

    scheduler = Scheduler[str]()
    scheduler.start(flaky)
    scheduler.add("a")
    await asyncio.wait_for(retried.wait(), 5)
    assert calls == ["a", "a"]
    assert "pass of a failed; again in 0.05s" in caplog.text
    scheduler.stop()


async def test_stop_cancels_passes_in_flight() -> None:
    passes, scheduler = Passes(), Scheduler[str]()
    passes.release = asyncio.Event()
    scheduler.start(passes)
    scheduler.add("a")
    await passes.until(lambda: passes.running == {"a"})
    scheduler.stop()
    await passes.until(lambda: not passes.running)
    assert len(scheduler) == 0
