"""Scale-out storage: many relay processes share one Redis (or a Redis Cluster).

Per feed ``F`` every key carries the hash tag ``{F}`` so a cluster keeps them on one shard:

  ``<p>:{F}:head``  hash  seq, hash, rtime of the last record
  ``<p>:{F}:log``   stream, entry id ``<seq>-0``, fields ``d`` (record JSON), ``i`` (event id), ``h`` (hash)
  ``<p>:{F}:ids``   hash  event id -> seq (idempotent publish)
  ``<p>:{F}:snap``  hash  seq, head, state, meta (latest snapshot)
  ``<p>:{F}:base``  hash  seq, head, state, relay, rsig, meta (a compacted feed's base; relay/ops/compact.py)
  ``<p>:{F}:turn``  the process that lost its last appends and goes next (expires, see TURN_AFTER_LOSSES)
  ``<p>:{F}:lease`` ``<p>:{F}:epoch``  the feed's sequencing lease and its fencing epoch (relay.storage.redis_lease)
  ``<p>:{F}:ch``    the feed's pub/sub channel (sharded pub/sub on a cluster)
  ``<p>:feeds``     sorted set of feed ids (for listing; its own slot)

The append is one Lua script: check the sequencing lease (an append names the lease it holds,
``token:epoch``, and is refused unless that is the stored one; an append naming none is refused
while any process holds one), compare the stored head with what the relay sealed against,
then add every record of the batch to the stream, the id index and the head, and publish the
batch on the feed's channel, atomically, in one round trip. A process that loses the race
gets ``HeadMoved`` together with the records it missed (up to 64, so it need not read them),
catches up and seals again. Durability is Redis's: run it
with ``appendonly yes`` (and ``appendfsync always`` for the same guarantee as SQLite FULL).
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from collab.errors import Unavailable
from collab.events import Record, Snapshot

from relay.storage.base import Deposed, FeedHead, HeadMoved, Storage, StoredBase, StoredRecord, StoredSnapshot
from relay.storage.redis_lease import ACQUIRE_LUA, LEASE_TTL, RENEW_LUA, Leases

log = logging.getLogger(__name__)

APPEND_LUA = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local lease = redis.call('GET', KEYS[6])
if lease ~= (ARGV[5] ~= '' and ARGV[5] or false) then return {3, cur} end  -- fenced: not the sequencer
local turn = redis.call('GET', KEYS[5])
if cur ~= tonumber(ARGV[1]) then
  if ARGV[4] == '1' and not turn then  -- the caller keeps losing: it takes the next turn
    redis.call('SET', KEYS[5], ARGV[3], 'PX', 100)
  end
  local out = {0, cur}  -- and what the loser missed (up to 64 records): it need not read them
  if cur > tonumber(ARGV[1]) then
    local from = string.format('%d-0', tonumber(ARGV[1]) + 1)
    for _, e in ipairs(redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', 64)) do
      local f = e[2]
      for j = 1, #f, 2 do
        if f[j] == 'd' then out[#out + 1] = f[j + 1] break end
      end
    end
  end
  return out
end
if turn and turn ~= ARGV[3] then return {2, cur} end  -- current, but another process's turn
local n = (#ARGV - 5) / 5
local seen = {}
for i = 0, n - 1 do  -- an id stored before, or twice in this batch: the whole batch is refused
  local id = ARGV[7 + i * 5]
  if seen[id] or redis.call('HEXISTS', KEYS[3], id) == 1 then return {-1, cur} end
  seen[id] = true
end
local lines = {}
local last = 0
for i = 0, n - 1 do
  local b = 6 + i * 5
  local seq, id, hash, rtime, data = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  redis.call('XADD', KEYS[2], seq .. '-0', 'd', data, 'i', id, 'h', hash)
  redis.call('HSET', KEYS[3], id, seq)
  lines[#lines + 1] = data
  last = b
end
redis.call('HSET', KEYS[1], 'seq', ARGV[last], 'hash', ARGV[last + 2], 'rtime', ARGV[last + 3])
if turn then redis.call('DEL', KEYS[5]) end
if ARGV[2] == '1' then
  redis.call('SPUBLISH', KEYS[4], table.concat(lines, '\\n'))
else
  redis.call('PUBLISH', KEYS[4], table.concat(lines, '\\n'))
end
return {1, tonumber(ARGV[last])}
"""

SNAPSHOT_LUA = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if tonumber(ARGV[1]) <= cur then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'head', ARGV[2], 'state', ARGV[3], 'meta', ARGV[4])
return 1
"""

# KEYS: head, log, ids, base; ARGV: seq, then (optionally) seq, head, state, relay, rsig, meta of the base
COMPACT_LUA = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local upto = tonumber(ARGV[1])
if cur <= upto then return -1 end
if #ARGV > 1 then
  local old = tonumber(redis.call('HGET', KEYS[4], 'seq') or '0')
  if tonumber(ARGV[2]) >= old then
    redis.call('HSET', KEYS[4], 'seq', ARGV[2], 'head', ARGV[3], 'state', ARGV[4], 'relay', ARGV[5],
               'rsig', ARGV[6], 'meta', ARGV[7])
  end
end
local n = 0
while true do
  local es = redis.call('XRANGE', KEYS[2], '-', upto .. '-0', 'COUNT', 500)
  if #es == 0 then break end
  local ids, ents = {}, {}
  for _, e in ipairs(es) do
    ents[#ents + 1] = e[1]
    local f = e[2]
    for j = 1, #f, 2 do
      if f[j] == 'i' then ids[#ids + 1] = f[j + 1] break end
    end
  end
  redis.call('XDEL', KEYS[2], unpack(ents))
  if #ids > 0 then redis.call('HDEL', KEYS[3], unpack(ids)) end
  n = n + #ents
end
return n
"""

UNAVAILABLE = (RedisError, OSError, asyncio.TimeoutError)

# Fairness between processes appending to one feed: plain compare-and-set lets a process that is
# always ready first (Redis serves queued commands in a fixed order) win every race, so another
# one can lose its batch 16 times in a row and answer `unavailable`. A process that lost
# TURN_AFTER_LOSSES times in a row claims the feed's next turn (key `turn`, 100 ms expiry) in its
# next losing attempt; until it appends, the others are told to wait (they poll every 1 ms).
# A token bucket shared by a site's processes: refill by the time passed, take what a process
# admitted since it last told; the tokens left (as text: a float). Expires once it would be full.
BUCKET_LUA = """
local rate, burst, now, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, ts = tonumber(b[1]) or burst, tonumber(b[2]) or now
if now > ts then tokens = math.min(burst, tokens + rate * (now - ts) / 1000) else now = ts end
tokens = tokens - n
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return tostring(tokens)
"""
HEALTH_TIMEOUT = 0.5  # seconds /health waits for Redis to answer a ping
TURN_AFTER_LOSSES = 2
TURN_WAITS = 200


def feed_key(prefix: str, feed: str, part: str) -> str:
    return f"{prefix}:{{{feed}}}:{part}"


async def connect(url: str, **kw: Any) -> aioredis.Redis | RedisCluster:
    """Connect to ``url``; switch to the cluster client if the server runs in cluster mode."""
    opts: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0, "health_check_interval": 10}
    opts.update(kw)
    plain = aioredis.Redis.from_url(url, **opts)
    try:
        info = await plain.info("cluster")
    except UNAVAILABLE:
        await plain.aclose()
        raise
    if info.get("cluster_enabled"):
        await plain.aclose()
        cluster = RedisCluster.from_url(url, **{k: v for k, v in opts.items() if k != "health_check_interval"})
        try:
            await cluster.initialize()
        except BaseException:
            await cluster.aclose()
            raise
        return cluster
    return plain


class RedisStorage(Storage):
    name = "redis"

    def __init__(self, url: str, prefix: str = "colony", open_timeout: float = 30.0, timeout: float = 5.0,
                 lease_ttl: float = LEASE_TTL) -> None:
        self.url, self.prefix, self.open_timeout = url, prefix, open_timeout
        self.timeout = timeout  # seconds a command may take before the caller gets Unavailable (storage_timeout)
        self.r: aioredis.Redis | RedisCluster | None = None
        self.cluster = False
        self._append_sha = ""
        self._snap_sha = ""
        self._acquire_sha = self._renew_sha = ""
        self.round_trips = 0
        self.appends = 0
        self.head_moved = 0   # appends refused because another process appended first
        self.turn_waits = 0   # appends told to wait for a process that kept losing
        self.fenced = 0       # appends refused by the lease check (relay.storage.redis_lease)
        self.token = os.urandom(8).hex()  # this process, in the feed's `turn` key
        self._losses: dict[str, int] = {}  # feed -> appends lost in a row
        self.last_error: str | None = None
        self.leases = Leases(self, lease_ttl)  # the feeds this process sequences (relay.core.sequencer)

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        if self.r is not None:
            raise RuntimeError("RedisStorage is already open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.open_timeout
        while True:
            try:
                self.r = await connect(self.url, socket_timeout=self.timeout)
                break
            except UNAVAILABLE as exc:
                if loop.time() >= deadline:
                    raise RuntimeError(f"cannot reach Redis at {self.url}: {exc}; is redis-server running?") from exc
                await asyncio.sleep(0.5)
        self.cluster = isinstance(self.r, RedisCluster)
        try:
            await self._load_scripts()
        except BaseException:
            await self.close()  # a half-open store holds no connection
            raise

    async def _load_scripts(self) -> None:
        r = self._client()
        if isinstance(r, RedisCluster):  # every primary: a feed's keys (and so its EVALSHA) may live on any
            # (script_load() takes no target_nodes; execute_command does, and merges the SHAs)
            load = "SCRIPT LOAD"
            self._append_sha = await r.execute_command(load, APPEND_LUA, target_nodes=RedisCluster.PRIMARIES)
            self._snap_sha = await r.execute_command(load, SNAPSHOT_LUA, target_nodes=RedisCluster.PRIMARIES)
            self._acquire_sha = await r.execute_command(load, ACQUIRE_LUA, target_nodes=RedisCluster.PRIMARIES)
            self._renew_sha = await r.execute_command(load, RENEW_LUA, target_nodes=RedisCluster.PRIMARIES)
        else:
            self._append_sha = await r.script_load(APPEND_LUA)
            self._snap_sha = await r.script_load(SNAPSHOT_LUA)
            self._acquire_sha = await r.script_load(ACQUIRE_LUA)
            self._renew_sha = await r.script_load(RENEW_LUA)

    async def close(self) -> None:
        if self.r is not None:
            await self.r.aclose()
            self.r = None

    def _client(self) -> aioredis.Redis | RedisCluster:
        if self.r is None:
            raise Unavailable("storage is closed")
        return self.r

    def key(self, feed: str, part: str) -> str:
        return feed_key(self.prefix, feed, part)

    def channel(self, feed: str) -> str:
        return self.key(feed, "ch")

    async def _call(self, what: str, coro: Any) -> Any:
        self.round_trips += 1
        try:
            result = await coro
        except UNAVAILABLE as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise Unavailable(f"storage unavailable ({what}): Redis did not answer") from exc
        self.last_error = None
        return result

    async def _evalsha(self, which: str, keys: list[str], args: list[Any]) -> Any:
        r = self._client()
        try:
            return await self._call(which, r.evalsha(getattr(self, f"_{which}_sha"), len(keys), *keys, *args))
        except Unavailable as exc:
            if not isinstance(exc.__cause__, NoScriptError):
                raise
        await self._load_scripts()  # Redis restarted: its script cache is empty
        return await self._call(which, r.evalsha(getattr(self, f"_{which}_sha"), len(keys), *keys, *args))

    # -- writing ---------------------------------------------------------------------------
    async def append(self, feed: str, expected_seq: int, records: list[tuple[Record, str]]) -> None:
        r = self._client()
        recs: list[Any] = []
        for rec, data in records:
            recs += [rec.seq, rec.event.id, rec.hash, rec.rtime, data]
        keys = [self.key(feed, "head"), self.key(feed, "log"), self.key(feed, "ids"), self.channel(feed),
                self.key(feed, "turn"), self.key(feed, "lease")]
        for _ in range(TURN_WAITS):
            losing = "1" if self._losses.get(feed, 0) >= TURN_AFTER_LOSSES else "0"
            args = [expected_seq, "1" if self.cluster else "0", self.token, losing, self.leases.fence(feed), *recs]
            ok, cur, *missed = await self._evalsha("append", keys, args)
            if ok != 2:
                break
            self.turn_waits += 1  # our head is current, but a process that kept losing goes first
            await asyncio.sleep(0.001)
        if ok == 3:  # another process sequences the feed (or our lease lapsed and was granted again)
            self.fenced += 1
            self.leases.deposed(feed)
            raise Deposed(feed)
        if ok != 1:  # 0: the head moved (with the records missed); -1: an event id got stored meanwhile
            self._losses[feed] = self._losses.get(feed, 0) + 1
            self.head_moved += 1
            raise HeadMoved(feed, expected_seq, int(cur), [m.decode() for m in missed])
        self._losses.pop(feed, None)
        self.appends += 1
        if expected_seq == 0:
            await self._call("register", r.zadd(f"{self.prefix}:feeds", {feed: 0}, nx=True))
        # after the last await: the caller commits (and announces) these before any other append
        self.last_append = (feed, records[-1][0].seq)

    # -- sequencing leases (relay.storage.redis_lease) --------------------------------------
    async def lease_acquire(self, feed: str, ttl_ms: int) -> list[Any]:
        """``[1, epoch]`` granted or renewed (ours), else ``[0, holder token, ms left]``."""
        res: list[Any] = await self._evalsha("acquire", [self.key(feed, "lease"), self.key(feed, "epoch")],
                                             [self.token, ttl_ms])
        return res

    async def lease_renew(self, leases: list[tuple[str, str, int]]) -> list[bool | None]:
        """Renew (``ttl_ms`` > 0) or release (0) each ``(feed, token:epoch, ttl_ms)`` in one
        pipelined round trip: True if it was still that lease, None if Redis lost the script."""
        pipe = self._client().pipeline(transaction=False)
        for feed, fence, ttl_ms in leases:
            pipe.evalsha(self._renew_sha, 1, self.key(feed, "lease"), fence, ttl_ms)
        answers = await self._call("lease renew", pipe.execute(raise_on_error=False))
        if any(isinstance(a, Exception) for a in answers):
            await self._load_scripts()  # Redis restarted: its script cache is empty
        return [None if isinstance(a, Exception) else int(a) == 1 for a in answers]

    # -- reading ---------------------------------------------------------------------------
    async def head(self, feed: str) -> FeedHead | None:
        seq, h, rtime = await self._call("head",
                                         self._client().hmget(self.key(feed, "head"), "seq", "hash", "rtime"))
        if seq is None:
            return None
        return FeedHead(feed, int(seq), h.decode(), int(rtime))

    async def read(self, feed: str, since: int, limit: int) -> list[StoredRecord]:
        log_key = self.key(feed, "log")
        rows = await self._call("read", self._client().xrange(log_key, f"{since + 1}-0", "+", count=limit))
        out = []
        for entry_id, fields in rows:
            seq = int(entry_id.split(b"-", 1)[0])
            out.append(StoredRecord(seq, fields[b"i"].decode(), fields[b"h"].decode(), fields[b"d"].decode()))
        return out

    async def lookup_ids(self, feed: str, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        seqs = await self._call("lookup", self._client().hmget(self.key(feed, "ids"), ids))
        return {i: int(s) for i, s in zip(ids, seqs, strict=True) if s is not None}

    async def feeds(self, prefix: str = "", limit: int = 1000) -> list[FeedHead]:
        r = self._client()
        lo = f"[{prefix}" if prefix else "-"
        hi = f"[{prefix}\xff" if prefix else "+"
        names = [n.decode() for n in
                 await self._call("feeds", r.zrangebylex(f"{self.prefix}:feeds", lo, hi, start=0, num=limit))]
        pipe = r.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self.key(name, "head"), "seq", "hash", "rtime")
        heads = await self._call("feeds", pipe.execute()) if names else []
        return [FeedHead(n, int(s), h.decode(), int(t)) for n, (s, h, t) in zip(names, heads, strict=True)
                if s is not None]

    async def save_snapshot(self, snap: StoredSnapshot) -> None:
        keys = [self.key(snap.feed, "snap")]
        await self._evalsha("snap", keys, [snap.seq, snap.head, snap.state, snap.meta])

    async def load_snapshot(self, feed: str) -> StoredSnapshot | None:
        d = await self._call("snapshot", self._client().hgetall(self.key(feed, "snap")))
        if not d:
            return None
        return StoredSnapshot(feed, int(d[b"seq"]), d[b"head"].decode(), d[b"state"], d[b"meta"].decode())

    # -- retention -----------------------------------------------------------------------------
    @staticmethod
    def _base_args(base: StoredBase) -> list[Any]:
        b = base.snap
        return [b.seq, b.head, b.state, b.relay, b.rsig, base.meta]

    async def _compact(self, feed: str, seq: int, base: StoredBase | None) -> int:
        r = self._client()
        keys = [self.key(feed, "head"), self.key(feed, "log"), self.key(feed, "ids"), self.key(feed, "base")]
        args = [seq, *(self._base_args(base) if base is not None else [])]
        # one-off (offline) maintenance: EVAL, not a cached script
        return int(await self._call("compact", r.eval(COMPACT_LUA, len(keys), *keys, *args)))

    async def save_base(self, base: StoredBase) -> None:
        b = base.snap
        r = self._client()
        old = await self._call("base", r.hget(self.key(b.feed, "base"), "seq"))
        if old is not None and int(old) > b.seq:
            return
        await self._call("base", r.hset(self.key(b.feed, "base"), mapping=dict(zip(
            ("seq", "head", "state", "relay", "rsig", "meta"), self._base_args(base), strict=True))))
        # a base for a feed without records (a restore: relay/ops/backup.py) starts the feed at its seq
        if not await self._call("base", r.exists(self.key(b.feed, "head"))):
            await self._call("base", r.hset(self.key(b.feed, "head"),
                                            mapping={"seq": b.seq, "hash": b.head, "rtime": 0}))
            await self._call("register", r.zadd(f"{self.prefix}:feeds", {b.feed: 0}, nx=True))

    async def load_base(self, feed: str) -> StoredBase | None:
        d = await self._call("base", self._client().hgetall(self.key(feed, "base")))
        if not d:
            return None
        snap = Snapshot(feed, int(d[b"seq"]), d[b"head"].decode(), bytes(d[b"state"]), d[b"relay"].decode(),
                        d[b"rsig"].decode())
        return StoredBase(snap, d[b"meta"].decode())

    async def delete_through(self, feed: str, seq: int, base: StoredBase | None = None) -> int:
        if base is not None and (base.snap.feed != feed or base.seq != seq):
            raise ValueError("the base must summarise exactly the records deleted")
        n = await self._compact(feed, seq, base)
        if n < 0:
            raise ValueError(f"{feed}: cannot delete through {seq}: it is not below the head")
        return n

    async def take_tokens(self, kind: str, rate: float, burst: int, now_ms: int,
                          counts: dict[str, int]) -> list[float]:
        """Take ``counts`` from the site-wide token buckets (``rate``/s, ``burst``) of ``kind`` in
        one pipelined round trip; the tokens left in each, in ``counts``' order (negative: the
        name is over by that much). relay.core.sitelimits: site-wide rate limits."""
        pipe = self._client().pipeline(transaction=False)
        for who, n in counts.items():
            pipe.eval(BUCKET_LUA, 1, f"{self.prefix}:rl:{kind}:{who}", rate, burst, now_ms, n)
        return [float(x) for x in await self._call("rate buckets", pipe.execute())]

    async def health(self) -> dict[str, object]:
        ok = True
        try:  # answer within HEALTH_TIMEOUT even while Redis stalls (a cancelled ping drops its connection)
            await self._call("ping", asyncio.wait_for(self._client().ping(), min(HEALTH_TIMEOUT, self.timeout)))
        except Unavailable:
            ok = False
        return {"backend": self.name, "ok": ok, "url": _redact(self.url), "cluster": self.cluster,
                "appends": self.appends, "round_trips": self.round_trips, "head_moved": self.head_moved,
                "turn_waits": self.turn_waits, "fenced": self.fenced, **self.leases.health(),
                "error": self.last_error}


def _redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
