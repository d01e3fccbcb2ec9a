"""Rate limits that hold across every process of a Redis site (issue 13, item 4).

A :class:`SiteLimiter` is a :class:`relay.core.limits.RateLimiter` (the per-process token bucket
per name: an author key or a client IP) that also counts what it admitted per name. Every
``interval`` (0.1 s) :meth:`SiteLimiter.share` takes those counts from a token bucket per name
kept in the shared store with the same ``rate`` and ``burst`` (:class:`Buckets`; one pipelined
round trip for all names, never one per event) and learns what is left: a name whose site-wide
bucket is empty (negative by k tokens) is refused by every process until it has refilled
(k / rate seconds). So the site as a whole admits what one bucket admits (``burst`` at once,
``rate`` per second sustained) plus what each process admits in one interval before it hears
(at most its own bucket), not N times that. On one process (SQLite) nothing is shared: the
per-process bucket is the site. If the store does not answer, each process keeps its own bucket
(logged) until it does.
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


class Buckets(Protocol):
    """The shared store's side (``relay.storage.redis.RedisStorage.take_tokens``)."""

    async def take_tokens(self, kind: str, rate: float, burst: int, now_ms: int,
                          counts: dict[str, int]) -> list[float]:
        """Take ``counts`` from the site's buckets of ``kind``; the tokens left, in order."""
        ...


class SiteLimiter(RateLimiter):
    """A per-process token bucket per name, bounded site-wide per second (see the module doc)."""

    def __init__(self, rate: float, burst: int, kind: str, max_buckets: int = 100_000) -> None:
        super().__init__(rate, burst, max_buckets)
        self.kind = kind
        self._counts: dict[str, int] = {}
        self._over: dict[str, float] = {}  # name -> until when (time.time()) the site refuses it
        self.refused_site = 0  # admissions refused because the site as a whole was over (metrics, tests)

    def allow(self, who: str, n: float = 1.0) -> bool:
        over = self._over.get(who)
        if over is not None:
            if time.time() < over:
                self.refused_site += 1
                return False
            del self._over[who]
        if not super().allow(who, n):
            return False
        if who in self._counts or len(self._counts) < MAX_NAMES:
            self._counts[who] = self._counts.get(who, 0) + round(n)
        return True

    async def acquire(self, who: str) -> None:
        """Wait until ``who`` may go on: its own bucket's refill, or the site's."""
        while not self.allow(who):  # tokens and windows pass with time: no event to wait for
            over = self._over.get(who)
            if over is not None:
                await asyncio.sleep(max(0.001, over - time.time()))
            else:
                bucket = self._buckets.get(who)
                await asyncio.sleep(bucket.refill_time() if bucket is not None else 0.0)

    def refund(self, who: str, n: float = 1.0) -> None:
        super().refund(who, n)
        if self._counts.get(who, 0) >= n:
            self._counts[who] -= round(n)

    async def share(self, store: Buckets) -> None:
        """Take this process's admissions since the last share from the site's buckets, and learn
        which names the site refuses, and until when."""
        counts, self._counts = {k: v for k, v in self._counts.items() if v > 0}, {}
        if not counts:
            return
        now = time.time()
        left = await store.take_tokens(self.kind, self.rate, self.burst, int(now * 1000), counts)
        for who, tokens in zip(counts, left, strict=True):
            if tokens < 0 and self.rate > 0:
                self._over[who] = now + -tokens / self.rate
        if len(self._over) > MAX_NAMES:
            self._over = {k: t for k, t in self._over.items() if t > now}

    async def run(self, store: Buckets, interval: float = SHARE_INTERVAL) -> None:
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


__all__ = ["SHARE_INTERVAL", "Buckets", "SiteLimiter"]
