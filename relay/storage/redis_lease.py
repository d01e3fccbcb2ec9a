"""Sequencing leases on a Redis site: one process at a time appends to a feed.

Per feed ``F`` (hash-tagged like every key of the feed, so a cluster keeps them on its shard):

  ``<p>:{F}:lease``  string ``<process token>:<epoch>``, expires ``ttl`` ms after the last renewal
  ``<p>:{F}:epoch``  integer, incremented by every grant (never expires: epochs only grow)

A process that holds the lease is the feed's *sequencer*: it seals and appends. The append
script (``relay.storage.redis``) checks the lease atomically with the compare-and-set: an append
that names a lease must name the one stored (same token, same epoch), and an append that names
none is refused while anybody holds one. So a deposed sequencer (its lease expired while it
stalled, and another process was granted a newer epoch) can never append, whatever its clock
says. :class:`Leases` is one process's view: what it holds, until when it may trust that without
asking Redis (``valid_until``, counted from the moment the grant or renewal was *sent*), and
when it last used each lease (an idle one is released). relay.core.sequencer drives it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.storage.redis import RedisStorage

# KEYS: lease, epoch; ARGV: token, ttl ms. {1, epoch} granted (or renewed: it is ours already);
# {0, holder token, ms left} held by another process
ACQUIRE_LUA = """
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, ':', 1, true)
  local tok = string.sub(v, 1, sep - 1)
  if tok == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(string.sub(v, sep + 1))}
  end
  return {0, tok, redis.call('PTTL', KEYS[1])}
end
local ep = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ep, 'PX', ARGV[2])
return {1, ep}
"""

# KEYS: lease; ARGV: token:epoch, ttl ms (0: release). 1 if the lease was still exactly that one
RENEW_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

LEASE_TTL = 2.0       # seconds a lease lasts after its last renewal (failover takes at most this)
RENEW_EVERY = 0.5     # seconds between renewals (four chances before the lease lapses)
IDLE_RELEASE = 5.0    # seconds without a publish after which a held lease is released
TRUST_FRACTION = 0.75  # a grant is trusted locally for this share of the TTL (clock drift margin)


@dataclass(slots=True)
class Held:
    epoch: int
    valid_until: float  # time.monotonic(): trust the lease without asking until then
    used: float         # time.monotonic() of the last publish sequenced under it


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to :meth:`Leases.acquire`: ours (``epoch``) or ``holder``'s (its token)."""

    epoch: int = 0
    holder: str | None = None
    ms_left: int = 0

    @property
    def mine(self) -> bool:
        return self.holder is None


class Leases:
    """The sequencing leases one process holds (see the module docstring)."""

    def __init__(self, storage: RedisStorage, ttl: float = LEASE_TTL) -> None:
        self.storage, self.ttl = storage, ttl
        self.held: dict[str, Held] = {}
        self.granted = 0   # leases granted to this process (counted in /health)
        self.lost = 0      # leases found taken or lapsed at renewal, or refused at append
        self.released = 0  # idle leases given back

    def configure(self, ttl: float) -> None:
        """Set the lease duration (``colony serve --sequencer-lease``) before any lease is held."""
        if self.held:
            raise RuntimeError("leases are held already")
        self.ttl = ttl

    @property
    def token(self) -> str:
        return self.storage.token

    def fence(self, feed: str) -> str:
        """What the append names: ``token:epoch`` of the lease held on ``feed``, else ``""``."""
        h = self.held.get(feed)
        return f"{self.token}:{h.epoch}" if h is not None else ""

    def holds(self, feed: str) -> bool:
        """Whether this process may sequence ``feed`` now without asking Redis (and mark it used)."""
        h = self.held.get(feed)
        if h is None:
            return False
        now = time.monotonic()
        if now >= h.valid_until:
            return False
        h.used = now
        return True

    def deposed(self, feed: str) -> None:
        """An append named a lease Redis no longer has: forget it."""
        if self.held.pop(feed, None) is not None:
            self.lost += 1

    async def acquire(self, feed: str) -> Grant:
        sent = time.monotonic()
        res = await self.storage.lease_acquire(feed, int(self.ttl * 1000))
        if int(res[0]) != 1:
            holder = res[1].decode() if isinstance(res[1], bytes) else str(res[1])
            return Grant(holder=holder, ms_left=int(res[2]))
        epoch = int(res[1])
        old = self.held.get(feed)
        if old is None or old.epoch != epoch:
            self.granted += 1
        self.held[feed] = Held(epoch, sent + self.ttl * TRUST_FRACTION, sent)
        return Grant(epoch)

    async def renew(self, idle: float = IDLE_RELEASE) -> list[str]:
        """Renew every held lease in one pipelined round trip, releasing those not used for
        ``idle`` seconds; returns the feeds whose lease was lost (taken, or lapsed)."""
        if not self.held:
            return []
        sent = time.monotonic()
        feeds = list(self.held.items())
        answers = await self.storage.lease_renew(
            [(feed, f"{self.token}:{h.epoch}", 0 if sent - h.used >= idle else int(self.ttl * 1000))
             for feed, h in feeds])
        lost = []
        for (feed, h), answer in zip(feeds, answers, strict=True):
            if self.held.get(feed) is not h or answer is None:
                continue  # re-granted meanwhile; or Redis lost the script (reloaded: the next round)
            if sent - h.used >= idle:
                del self.held[feed]
                self.released += 1
            elif answer:
                h.valid_until = sent + self.ttl * TRUST_FRACTION
            else:
                del self.held[feed]
                self.lost += 1
                lost.append(feed)
        return lost

    async def release_all(self) -> None:
        """Give every held lease back (a graceful stop: another process takes over at once)."""
        held, self.held = self.held, {}
        if held:
            await self.storage.lease_renew([(feed, f"{self.token}:{h.epoch}", 0) for feed, h in held.items()])
            self.released += len(held)

    def health(self) -> dict[str, int]:
        return {"leases_held": len(self.held), "leases_granted": self.granted, "leases_lost": self.lost,
                "leases_released": self.released}
