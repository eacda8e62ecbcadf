"""When each tracked resource gets its next pass: a timer per key, and a task only while a
pass runs.

This is the work queue of controller-runtime in asyncio terms: a key runs at most one pass at
a time, a wake-up during a pass makes the next one follow at once, and an idle key costs one
timer. (A long-lived task per resource, as a kopf daemon is, keeps its own coroutines,
queues and a copy of the whole object at rest: at a thousand resources, tens of megabytes.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
# A pass; returns the seconds until the next one. It handles its own errors: one that escapes
# is logged and the pass is tried again after this long.
Work = Callable[[K], Awaitable[float]]
RETRY_AFTER_UNEXPECTED_SECONDS = 60.0

_log = logging.getLogger(__name__)


@dataclass
class _Entry:
    timer: asyncio.TimerHandle | None = None
    due: float = float("inf")  # loop time of the timer
    running: asyncio.Task[None] | None = None
    again: bool = False  # woken while running: pass again as soon as it ends


class Scheduler(Generic[K]):
    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = {}
        self._work: Work[K] | None = None

    def start(self, work: Work[K]) -> None:
        """Run passes with `work` from now on (keys added before wait until then)."""
        self._work = work
        for key, entry in self._entries.items():
            if entry.running is None and entry.timer is None:
                self._set_timer(key, entry, 0.0)

    def stop(self) -> None:
        """Cancel every timer and every pass in flight."""
        for entry in self._entries.values():
            self._cancel(entry)
        self._entries.clear()
        self._work = None

    def wake(self, key: K) -> None:
        """Pass now (or right after the pass in flight). Unknown keys are ignored."""
        entry = self._entries.get(key)
        if entry is not None:
            self._schedule(key, entry, 0.0)

    def add(self, key: K) -> None:
        """Schedule passes of `key`: the first one runs now. A key already added is woken."""
        self._schedule(key, self._entries.setdefault(key, _Entry()), 0.0)

    def drop(self, key: K) -> None:
        """Remove `key`: no more passes, and the one in flight is cancelled (a
        resource deleted needs no more writes, and one created anew under its name must not
        share its key with a pass for the old one), unless it is the caller."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._cancel(entry)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @staticmethod
    def _cancel(entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        if entry.running is not None and entry.running is not asyncio.current_task():
            entry.running.cancel()

    def _schedule(self, key: K, entry: _Entry, delay: float) -> None:
        if entry.running is not None:
            entry.again = entry.again or delay == 0.0
            return
        if self._work is None:
            return  # start() will run it
        loop = asyncio.get_running_loop()
        if entry.timer is not None:
            if entry.due <= loop.time() + delay:
                return  # already due sooner
            entry.timer.cancel()
        self._set_timer(key, entry, delay)

    def _set_timer(self, key: K, entry: _Entry, delay: float) -> None:
        loop = asyncio.get_running_loop()
        entry.due = loop.time() + delay
        entry.timer = loop.call_at(entry.due, self._begin, key, entry)

    def _begin(self, key: K, entry: _Entry) -> None:
        entry.timer, entry.due = None, float("inf")
        entry.running = asyncio.get_running_loop().create_task(self._pass(key, entry))

    async def _pass(self, key: K, entry: _Entry) -> None:
        assert self._work is not None  # only started passes run
        try:
            delay = await self._work(key)
        except Exception:
            _log.exception(f"pass of {key} failed; again in {RETRY_AFTER_UNEXPECTED_SECONDS:g}s")
            delay = RETRY_AFTER_UNEXPECTED_SECONDS
        finally:
            entry.running = None
        if self._entries.get(key) is not entry:
            return  # dropped: by its own work, or while the work caught the cancellation
        if entry.again:
            entry.again, delay = False, 0.0
        self._schedule(key, entry, delay)
