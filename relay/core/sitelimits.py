"""Rate limits that hold across every process of a Redis site (issue 13, item 4).

A :class:`SiteLimiter` is a :class:`relay.core.limits.RateLimiter` (the per-process token bucket
per name: an author key or a client IP) that also counts what it admitted per name. Every
``interval`` (0.1 s) :meth:`SiteLimiter.share` adds those counts to per-second counters in the
shared store, all names in one pipelined round trip (:class:`Counters`; never a round trip per
event), and learns the site-wide totals: once a name's total for the current wall-clock second
passes ``rate``, every process refuses it for the rest of that second. Each process's own bucket
(``rate``, ``burst``) still applies, so a burst of up to ``burst`` on one process is admitted at
once; sustained, N processes admit about ``rate`` events of a name per second in all (plus what
each admits in one interval before it hears), not N times ``rate``. On one process (SQLite)
nothing is shared: the per-process bucket is the site. If the store does not answer, each process
keeps its own bucket (logged) until it does.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from collab.errors import Unavailable

from relay.core.limits import RateLimiter

log = logging.getLogger(__name__)

SHARE_INTERVAL = 0.1  # seconds between two shares of the counts (what one process may overshoot)
MAX_NAMES = 100_000   # names counted between two shares (beyond: counted from the next share on)


class Counters(Protocol):
    """The shared store's side (``relay.storage.redis.RedisStorage.add_counts``)."""

    async def add_counts(self, kind: str, window: int, counts: dict[str, int]) -> list[int]:
        """Add ``counts`` to the ``kind`` counters of the second ``window``; the totals, in order."""
        ...


class SiteLimiter(RateLimiter):
    """A per-process token bucket per name, bounded site-wide per second (see the module doc)."""

    def __init__(self, rate: float, burst: int, kind: str, max_buckets: int = 100_000) -> None:
        super().__init__(rate, burst, max_buckets)
        self.kind = kind
        self.cap = max(1, int(rate))  # a name's site-wide admissions per wall-clock second
        self._counts: dict[str, int] = {}
        self._over: dict[str, int] = {}  # name -> the second (unix time) it is refused in
        self.refused_site = 0  # admissions refused because the site as a whole was over (metrics, tests)

    def allow(self, who: str, n: float = 1.0) -> bool:
        over = self._over.get(who)
        if over is not None:
            if int(time.time()) <= over:
                self.refused_site += 1
                return False
            del self._over[who]
        if not super().allow(who, n):
            return False
        if who in self._counts or len(self._counts) < MAX_NAMES:
            self._counts[who] = self._counts.get(who, 0) + round(n)
        return True

    async def acquire(self, who: str) -> None:
        """Wait until ``who`` may go on: its bucket's refill, or the end of the second the site
        refuses it in."""
        while not self.allow(who):  # tokens and windows pass with time: no event to wait for
            over = self._over.get(who)
            if over is not None:
                await asyncio.sleep(max(0.001, over + 1 - time.time()))
            else:
                bucket = self._buckets.get(who)
                await asyncio.sleep(bucket.refill_time() if bucket is not None else 0.0)

    def refund(self, who: str, n: float = 1.0) -> None:
        super().refund(who, n)
        if self._counts.get(who, 0) >= n:
            self._counts[who] -= round(n)

    async def share(self, store: Counters) -> None:
        """Add this process's counts since the last share to the site's, and learn which names
        are over for this second."""
        counts, self._counts = {k: v for k, v in self._counts.items() if v > 0}, {}
        if not counts:
            return
        window = int(time.time())
        totals = await store.add_counts(self.kind, window, counts)
        for who, total in zip(counts, totals, strict=True):
            if total > self.cap:
                self._over[who] = window
        if len(self._over) > MAX_NAMES:
            self._over = {k: w for k, w in self._over.items() if w >= window}

    async def run(self, store: Counters, interval: float = SHARE_INTERVAL) -> None:
        """Share every ``interval`` seconds until cancelled."""
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.share(store)
            except Unavailable as exc:  # the store is down: this process's buckets hold meanwhile
                if not failing:
                    log.warning("sharing %s rate counts failed (per-process limits only until it works): %r",
                                self.kind, exc)
                failing = True
            else:
                failing = False


__all__ = ["SHARE_INTERVAL", "Counters", "SiteLimiter"]
