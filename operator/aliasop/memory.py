"""Give the memory freed after a burst back to the operating system.

A burst (a thousand resources created at once, or a webhook for a model they all follow) fills
glibc's heap with short-lived objects. Once they are freed, glibc keeps the free space and only
returns what lies at the very top of the heap, so the resident set stays at the burst's peak:
at 1000 resources about a third of it was such free memory. `malloc_trim(0)` returns the free
pages from anywhere in the heap; it is cheap when there is little to return.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable


def find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim: Callable[[int], int] | None = getattr(libc, "malloc_trim", None)
    return trim


async def trim_periodically(trim: Callable[[int], int], every_seconds: float) -> None:
    """Call `trim` every `every_seconds`, in a thread: it walks the whole heap with glibc's
    lock held, and ctypes lets go of the GIL meanwhile."""
    while True:
        await asyncio.sleep(every_seconds)
        await asyncio.to_thread(trim, 0)
