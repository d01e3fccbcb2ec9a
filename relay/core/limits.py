"""Enforced limits (advertised at ``GET /limits``) and token-bucket rate limiting."""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from collab.namespaces import PendingBound


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame_bytes: int = 1 << 20          # one WebSocket message
    max_event_bytes: int = 256 << 10        # an event's signed bytes
    max_subscriptions: int = 100            # feeds per connection
    events_per_sec_key: float = 200.0       # sustained publish rate per author key
    burst_key: int = 400
    events_per_sec_ip: float = 2000.0       # sustained publish rate per client IP (checked before signatures)
    burst_ip: int = 4000
    max_outbound_frames: int = 4096         # queued frames per connection before it is cut as too slow
    max_backlog_page: int = 500             # records per storage read while catching a subscriber up
    max_doc_pending_bytes: int = 1 << 20    # a doc's updates waiting for dependencies, in bytes (too_large)
    max_doc_pending_updates: int = 256      # ... and how many of them (too_large)
    max_doc_pending_deletes: int = 4096     # ... and the deleted ranges among them (too_large)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def doc_pending(self) -> PendingBound:
        """The doc namespace's bound on pending updates (collab/namespaces/doc_pending.py)."""
        return PendingBound(self.max_doc_pending_bytes, self.max_doc_pending_updates, self.max_doc_pending_deletes)


@dataclass(frozen=True, slots=True)
class YjsLimits:
    """Per-connection limits of the Yjs endpoint (``/yjs/{name}``, docs/protocol.md section 21).

    A Yjs message is also bounded by ``Limits.max_frame_bytes`` and an edit by
    ``Limits.max_event_bytes`` (it is recorded as one event)."""

    awareness_per_sec: float = 30.0          # awareness (and query-awareness) messages per connection
    awareness_burst: int = 60
    max_awareness_bytes: int = 64 << 10      # one awareness message
    max_awareness_state_bytes: int = 16 << 10  # one client's state (JSON text)
    max_awareness_clients: int = 4           # awareness client ids one connection may control
    sync_requests_per_sec: float = 5.0       # sync step 1 requests (each costs a diff of the doc)
    sync_requests_burst: int = 20
    awareness_timeout: float = 30.0          # a client state not renewed for this long is removed
    agent_renew: float = 15.0                # agents' awareness states are renewed this often
    max_queued_write_bytes: int = 4 << 20    # a writer's edits waiting to be recorded

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self, n: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def refill_time(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are there (as of the last ``take``)."""
        if self.rate <= 0:
            return 1.0  # never refills: whoever waits checks again now and then
        return max(0.0, (n - self.tokens) / self.rate)


class RateLimiter:
    """Buckets per key (author or IP); idle buckets are dropped so memory stays bounded."""

    def __init__(self, rate: float, burst: int, max_buckets: int = 100_000) -> None:
        self.rate, self.burst, self.max_buckets = rate, burst, max_buckets
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, who: str) -> bool:
        b = self._buckets.get(who)
        if b is None:
            if len(self._buckets) >= self.max_buckets:
                self._prune()
            b = self._buckets[who] = TokenBucket(self.rate, self.burst)
        return b.take()

    async def acquire(self, who: str) -> None:
        """Wait until ``who`` may go on: sleeps as long as its bucket needs to refill a token."""
        while not self.allow(who):  # noqa: ASYNC110 - tokens refill with time: no event to wait for
            await asyncio.sleep(self._buckets[who].refill_time() if who in self._buckets else 0.0)

    def _prune(self) -> None:
        now = time.monotonic()
        full = self.burst / self.rate if self.rate else 0
        for k in [k for k, b in self._buckets.items() if now - b.stamp > full]:
            del self._buckets[k]
        if len(self._buckets) >= self.max_buckets:
            self._buckets.clear()
