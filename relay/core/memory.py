"""Give memory back to the operating system after a connection that held a lot is dropped.

A slow reader cut off by its byte cap (``relay.endpoints.outbox``) frees megabytes of queued
frames at once. CPython hands large objects to the C allocator, and glibc keeps freed pages in
its heaps for reuse: the relay's RSS stays at the attack's peak although nothing holds the
memory any more (measured: +3 to +10% after 13 stalled readers; docs/reliability.md, "Slow
readers"). ``malloc_trim(0)`` returns the free pages of every heap to the kernel.

:meth:`Trimmer.release_soon` (``release_soon``: the process's trimmer) asks for one trim;
trims run on the event loop, at most one per :data:`MIN_INTERVAL` seconds whatever the number
of requests (a trim walks the heaps: about a
millisecond for a relay of a few hundred MB), so a flood of cut connections costs one trim a
second. Where the C library has no ``malloc_trim`` (musl, macOS) it does nothing. The state is
per process on purpose: the C heap it trims is the process's own.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MIN_INTERVAL = 1.0  # seconds between two trims


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn  # type: ignore[no-any-return,unused-ignore]


class Trimmer:
    """Trims on request, at most one per ``min_interval`` seconds (one per process: see above)."""

    def __init__(self, trim: Callable[[int], int] | None, min_interval: float = MIN_INTERVAL) -> None:
        self._trim, self.min_interval = trim, min_interval
        self._last = 0.0
        self._pending: asyncio.TimerHandle | None = None
        self.trims = 0

    @property
    def available(self) -> bool:
        """Whether this C library can give freed heap pages back (glibc)."""
        return self._trim is not None

    def trim_now(self) -> bool:
        """Trim at once (True if the C library released something)."""
        self._last = time.monotonic()
        if self._trim is None:
            return False
        self.trims += 1
        return bool(self._trim(0))

    def release_soon(self) -> None:
        """Ask for a trim on the running loop; requests within ``min_interval`` share one."""
        if self._trim is None or self._pending is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._pending = loop.call_later(max(0.0, self._last + self.min_interval - time.monotonic()), self._run)

    def _run(self) -> None:
        self._pending = None
        try:
            self.trim_now()
        except OSError:  # never fatal: the memory just stays with the allocator
            log.debug("malloc_trim failed", exc_info=True)


TRIMMER = Trimmer(_load_trim())
release_soon = TRIMMER.release_soon
