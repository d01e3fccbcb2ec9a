"""Enforced limits (advertised at ``GET /limits``) and token-bucket rate limiting."""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from typing import Any

from collab.errors import ColonyError, LimitExceeded, RateLimited
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
    max_outbound_bytes: int = 8 << 20       # bytes held for one connection (its queue plus the socket's
                                            # write buffer) before it is cut as too slow
    unwritable_timeout: float = 20.0        # seconds a connection's socket may take no bytes before it is aborted
    storage_timeout: float = 5.0            # seconds a publish waits for storage (Redis) before `unavailable`
    max_backlog_page: int = 500             # records per storage read while catching a subscriber up
    max_loaded_feeds: int = 10_000          # feeds in memory per relay process (idle ones unloaded LRU first)
    subs_per_sec: float = 10.0              # sustained `sub` rate per connection
    subs_burst: int = 200                   # `sub` bucket size per connection (room for max_subscriptions at once)
    presence_interval: float = 0.25         # presence changes of a feed within this many seconds go out as one
    max_connections_per_ip: int = 256       # open WebSockets (/ws, /yjs, /fed) and SSE streams per client IP
    header_timeout: float = 10.0            # seconds for a request's (or upgrade's) HTTP headers to arrive
    first_message_timeout: float = 30.0     # seconds for a WebSocket's first message after the handshake
    stream_keepalive: float = 15.0          # seconds between keep-alive comments on an SSE stream
    # federation peers (a /fed link is bounded like an agent connection; docs/federation.md)
    peer_max_subscriptions: int = 10_000    # mirror subscriptions per inbound /fed link
    peer_frames_per_sec: float = 10_000.0   # frames per inbound /fed link (fwd, sub, unsub, heads)
    peer_frames_burst: int = 20_000
    peer_heads_per_sec: float = 5_000.0     # heads entries per peer (both directions), token bucket
    peer_heads_burst: int = 10_000          # also the most heads one frame may carry
    alarms_per_sec: float = 0.2             # alarm events written to relay/alarms (the rest: logged, counted)
    alarms_burst: int = 20
    # quotas (per relay process: docs/protocol.md section 14)
    feeds_per_sec_key: float = 2.0          # feeds one author key may create (its event is seq 1)
    feeds_burst_key: int = 100
    max_feeds_per_key: int = 10_000         # feeds one author key may create in total (per process)
    max_doc_bytes: int = 16 << 20           # a doc/ feed: the summed size of its events' signing bytes
    events_per_sec_feed: float = 5000.0      # publishes per feed (its worker), token bucket
    burst_feed: int = 10_000
    max_doc_pending_bytes: int = 1 << 20    # a doc's updates waiting for dependencies, in bytes (too_large)
    max_doc_pending_updates: int = 256      # ... and how many of them (too_large)
    max_doc_pending_deletes: int = 4096     # ... and the deleted ranges among them (too_large)
    max_watches: int = 16                   # prefixes one connection may watch (docs/protocol.md 9.4)

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
        """Take ``n`` tokens if there are that many (none otherwise)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def give(self, n: float = 1.0) -> None:
        """Return ``n`` tokens taken for what turned out to cost nothing (up to the burst)."""
        self.tokens = min(self.burst, self.tokens + n)

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

    def allow(self, who: str, n: float = 1.0) -> bool:
        """Take ``n`` tokens of ``who``'s bucket if it has them."""
        b = self._buckets.get(who)
        if b is None:
            if len(self._buckets) >= self.max_buckets:
                self._prune()
            b = self._buckets[who] = TokenBucket(self.rate, self.burst)
        return b.take(n)

    def refund(self, who: str, n: float = 1.0) -> None:
        """Give ``who`` back ``n`` tokens (a publish it was charged for was a duplicate)."""
        b = self._buckets.get(who)
        if b is not None:
            b.give(n)

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


class FeedQuota:
    """Feeds created per author key: a rate (token bucket) and a total, counted in this process.

    A feed is created by its first record (seq 1); its author is charged when the worker is
    about to append it (a creation that then fails is still charged). The relay's own key is
    never charged. The counts live in memory: they restart from zero when the process starts,
    and on a Redis site each process counts the creations it sequenced (docs/protocol.md 14).
    Keys are kept for the ``max_keys`` most recent creators (the least recent are forgotten)."""

    def __init__(self, limits: Limits, exempt: str = "", max_keys: int = 100_000) -> None:
        self.max_total, self.exempt, self.max_keys = limits.max_feeds_per_key, exempt, max_keys
        self.rate = RateLimiter(limits.feeds_per_sec_key, limits.feeds_burst_key, max_keys)
        self.created: OrderedDict[str, int] = OrderedDict()

    def refusal(self, key: str) -> ColonyError | None:
        """Charge ``key`` one feed creation; the refusal (nothing charged then), or None."""
        if key == self.exempt:
            return None
        total = self.created.get(key, 0)
        if total >= self.max_total:
            return LimitExceeded(f"this key created {total} feeds; the limit is {self.max_total} (max_feeds_per_key)")
        if not self.rate.allow(key):
            return RateLimited("this key creates feeds too fast (feeds_per_sec_key); slow down")
        self.created[key] = total + 1
        self.created.move_to_end(key)
        if len(self.created) > self.max_keys:
            self.created.popitem(last=False)
        return None
