"""Handing freed memory back to the operating system."""

import asyncio
import contextlib
import platform
import threading

import pytest

from aliasop.memory import find_malloc_trim, trim_periodically


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_finds_glibc_malloc_trim() -> None:
    trim = find_malloc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)  # 1: memory was released, 0: there was none to release


async def test_trims_every_interval_until_cancelled() -> None:
    calls: list[int] = []
    twice = threading.Event()  # trim runs in a worker thread

    def trim(pad: int) -> int:
        calls.append(pad)
        if len(calls) == 2:
            twice.set()
        return 0

    task = asyncio.create_task(trim_periodically(trim, 0.01))
    await asyncio.to_thread(twice.wait, 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert calls[:2] == [0, 0]
