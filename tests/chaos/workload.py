"""The agents of a chaos run and the subscribers that watch them.

Agents (each its own key and :class:`Recorder` client, some on the site's processes, some on the
federated relay) loop until told to stop, each choosing from its own ``random.Random``: doc
edits, vouches, DMs, auctions with stake (requester, bidders, winner's delivery) and task trees
(leader, workers). Refused or unanswered steps are simply given up: only acknowledged events
count. Watchers are plain clients, one per relay, that record every ``rec`` frame as it
arrives on the wire (before the SDK drops duplicates), per connection.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from collab import frames
from collab.auctions import Auction, grant
from collab.client import Client
from collab.dm import DirectChannel
from collab.doc import Doc
from collab.errors import ColonyError
from collab.keys import Keypair
from collab.tasks import TaskLeader, TaskWorker
from collab.trust import vouch
from tests.chaos.cluster import Cluster
from tests.relay.test_scaleout import RecordingClient

FAST = {"backoff_base": 0.05, "backoff_max": 1.0, "retry_limit": None}
DOCS = ("doc/chaos-a", "doc/chaos-b")
AGENTS, ON_FED = 6, 2  # the last ON_FED agents talk to the federated relay only
NOTES = tuple(f"note/chaos-{i}" for i in range(AGENTS))  # each agent's pipelined bursts
FIXED = (*DOCS, "ledger/main", "vouch/global", *NOTES)
STEP = 20.0  # seconds an agent waits on one step before giving it up
PER_WATCHER = 90  # feeds one watcher connection follows (the relay's max_subscriptions is 100)
NEW_FEEDS_PER_MIN = 100  # auctions and task trees (about 70 a minute): each relay's watchers have room for them


Recorder = RecordingClient  # an agent's client: every ack (event id -> seq) and every event submitted


class Watcher(Client):
    """A subscriber that records each ``rec`` frame it receives, per connection."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.conn = 0
        self.frames: dict[str, list[tuple[int, int, str]]] = {}  # feed -> (connection, seq, event id)
        self.snapshots: list[tuple[int, str]] = []  # (connection, feed)
        self.following: list[str] = []
        self.dropped: dict[str, str] = {}  # feed -> why the client ended its subscription

    def _drop_sub(self, sub: Any, error: BaseException | None) -> None:
        self.dropped[sub.feed] = repr(error)
        super()._drop_sub(sub, error)

    def _connected(self, ws: Any) -> None:
        self.conn += 1
        super()._connected(ws)

    def _on_message(self, message: str | bytes) -> None:
        text = message.decode() if isinstance(message, bytes) else message
        for part in frames.split(text):
            with contextlib.suppress(ValueError):
                f = json.loads(part)
                if isinstance(f, dict) and f.get("t") == "snapshot":  # only a subscription from 0 may get one
                    self.snapshots.append((self.conn, str(f.get("feed"))))
                if isinstance(f, dict) and f.get("t") == "rec" and isinstance(f.get("rec"), dict):
                    rec = f["rec"]
                    self.frames.setdefault(str(f.get("feed")), []).append(
                        (self.conn, int(rec.get("seq", -1)), str(rec.get("event", {}).get("id"))))
        super()._on_message(message)


@dataclass
class Workload:
    cluster: Cluster
    seed: int
    seconds: float = 60.0  # how long the agents run (sizes the watchers' pools)
    agents: list[Recorder] = field(default_factory=list)
    operator: Recorder | None = None
    watchers: list[tuple[str, Watcher]] = field(default_factory=list)  # (relay, watcher): a pool per relay
    follows: dict[str, list[tuple[str, Watcher]]] = field(default_factory=dict)  # feed -> one watcher per relay
    docs: dict[tuple[int, str], Doc] = field(default_factory=dict)
    feeds: set[str] = field(default_factory=set)   # every feed the workload touched (public ones watched)
    dms: dict[str, Keypair] = field(default_factory=dict)  # dm feed -> a member's key (to read it)
    steps: Counter[str] = field(default_factory=Counter)
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def clients(self) -> list[Recorder]:
        return [*self.agents, *([self.operator] if self.operator else [])]

    async def start(self) -> None:
        c = self.cluster
        assert c.fed is not None
        pool = 1 + int((len(FIXED) + self.seconds / 60 * NEW_FEEDS_PER_MIN) // PER_WATCHER)
        for n in c.nodes:  # the federated relay's mirrors carry the home's receipts: no pinned key there
            for _ in range(pool):
                w = Watcher(n.url, Keypair.generate(), relay_key=None if n is c.fed else c.site_key.public_hex, **FAST)
                await self.stack.enter_async_context(w)
                self.watchers.append((n.name, w))
        self.operator = op = Recorder(c.site_urls, c.operator, **FAST)
        await self.stack.enter_async_context(op)
        for i in range(AGENTS):
            urls = [c.fed.url] if i >= AGENTS - ON_FED else c.site_urls[i % 3:] + c.site_urls[:i % 3]
            agent = Recorder(urls, Keypair.generate(), **FAST)
            await self.stack.enter_async_context(agent)
            self.agents.append(agent)
        for f in FIXED:
            await self.watch(f)
        for i, a in enumerate(self.agents):
            for f in DOCS:
                self.docs[i, f] = await self.stack.enter_async_context(Doc(a, f, flush_timeout=5))
        for a in self.agents:  # stake credits for bids and rewards
            await grant(op, self._key(self.agents.index(a)), 1000)
        for f in DOCS:  # a first edit: a watcher resuming a doc from 0 would get a snapshot, not records
            self.docs[0, f].text.insert(0, "[start]")
            await self.docs[0, f].flushed(30)
        for f in FIXED:
            for name, w in self.follows[f]:
                sub = w.subscription(f)
                if sub is None:
                    raise RuntimeError(f"watcher on {name} lost its subscription to {f}")
                await sub.wait_synced(30)
                if f in DOCS or f == "ledger/main":  # the others have no record yet
                    await sub.wait_seq(1, 30)

    async def watch(self, feed: str) -> None:
        """One watcher of every relay follows ``feed`` from its start (the feed may not exist yet)."""
        if feed in self.feeds:
            return
        self.feeds.add(feed)
        chosen: dict[str, Watcher] = {}
        for name, w in self.watchers:
            if name not in chosen and len(w.following) < PER_WATCHER:
                chosen[name] = w
        if len(chosen) < len(self.cluster.nodes):
            raise RuntimeError(f"the watchers are full: {feed} is not followed everywhere (raise NEW_FEEDS_PER_MIN)")
        self.follows[feed] = list(chosen.items())
        for w in chosen.values():
            w.following.append(feed)
            await w.subscribe(feed, on_record=lambda r: None)

    async def run(self, stop: asyncio.Event) -> None:
        loops = [self._agent(i, random.Random(self.seed * 1000 + i), stop) for i in range(AGENTS)]
        await asyncio.gather(*loops, self._grants(random.Random(self.seed * 1000 + 99), stop))

    # -- the agents' loops -------------------------------------------------------------------
    async def _agent(self, i: int, rng: random.Random, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            kind = rng.choices(("doc", "burst", "vouch", "dm", "auction", "task"), (6, 2, 2, 2, 2, 1))[0]
            others = [j for j in range(AGENTS) if j != i]
            step: Awaitable[Any]
            if kind == "doc":
                step = self._edit(i, rng, n)
            elif kind == "burst":
                step = self._burst(i, rng.randint(2, 12), n)
            elif kind == "vouch":
                step = vouch(self.agents[i], self._key(rng.choice(others)), rng.randint(-200, 1000))
            elif kind == "dm":
                step = self._dm(i, rng.choice(others), n)
            elif kind == "auction":
                step = self._auction(i, rng.sample(others, 3), rng, n)
            else:
                step = self._task(i, rng.sample(others, 2), n)
            await self._try(kind, step)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.uniform(0.05, 0.4))  # the agent's pace

    async def _grants(self, rng: random.Random, stop: asyncio.Event) -> None:
        assert self.operator is not None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.uniform(1.0, 4.0))
            if not stop.is_set():
                await self._try("grant", grant(self.operator, self._key(rng.randrange(AGENTS)), rng.randint(1, 50)))

    async def _try(self, kind: str, step: Awaitable[Any]) -> None:
        try:
            await asyncio.wait_for(step, STEP)
            self.steps[kind] += 1
        except (ColonyError, TimeoutError):
            self.steps[f"{kind} given up"] += 1
        except Exception as exc:  # noqa: BLE001 -- not a refusal nor a timeout: shown in the report (an SDK bug?)
            self.steps[f"{kind} failed ({type(exc).__name__}: {str(exc)[:60]})"] += 1

    def _key(self, i: int) -> str:
        k = self.agents[i].key
        assert k is not None
        return k.public_hex

    async def _edit(self, i: int, rng: random.Random, n: int) -> None:
        doc = self.docs[i, rng.choice(DOCS)]
        text = str(doc.text)
        doc.text.insert(rng.randint(0, len(text)), f"[{i}.{n}]")
        await doc.flushed(STEP)

    async def _burst(self, i: int, k: int, n: int) -> None:
        """``k`` events pipelined (submitted without waiting for each ack), as an agent streams."""
        a = self.agents[i]
        futs = [a.submit(a.create_event(NOTES[i], "note", {"n": n, "k": j})) for j in range(k)]
        await asyncio.gather(*(asyncio.shield(f) for f in futs))

    async def _dm(self, i: int, j: int, n: int) -> None:
        ch = DirectChannel(self.agents[i], self._key(j))
        self.dms.setdefault(ch.feed, ch.me)
        self.feeds.add(ch.feed)
        await ch.send("request", {"n": n})

    async def _auction(self, i: int, bidders: list[int], rng: random.Random, n: int) -> None:
        feed = f"auction/chaos-{i}-{n}"
        await self.watch(feed)
        async with Auction(self.agents[i], feed) as req:
            await req.open({"job": n}, bid_window_ms=1500, result_window_ms=4000, min_stake=5, reward=10)

            async def bid(j: int) -> None:
                async with Auction(self.agents[j], feed) as a:
                    with contextlib.suppress(ColonyError):
                        await a.bid(rng.randint(5, 40))
                    st = await a.wait_status("awarded", "unawarded", "failed", timeout=STEP)
                    if st.assignee == self._key(j) and rng.random() < 0.8:  # else: slashed at the result deadline
                        await a.deliver({"by": j})

            await asyncio.gather(*(bid(j) for j in bidders))
            st = await req.wait_status("awarded", "unawarded", "failed", "completed", timeout=STEP)
            if st.status == "awarded":
                st = await req.wait_for(lambda s: s.result is not None or s.status != "awarded", STEP)
                if st.status == "awarded" and st.result is not None:
                    await req.accept()

    async def _task(self, i: int, workers: list[int], n: int) -> None:
        feed = f"task/chaos-{i}-{n}"
        await self.watch(feed)
        async with TaskLeader(self.agents[i], feed) as leader:
            await leader.open(f"tree {n}")
            subs = {f"s{k}": j for k, j in enumerate(workers)}
            for sub, j in subs.items():
                await leader.spawn(sub, self._key(j), f"part {sub}", heartbeat_ms=600_000)

            async def work(sub: str, j: int) -> None:
                w = TaskWorker(self.agents[j], feed, sub)
                try:
                    await w.start_work(STEP)
                    await w.progress(1, 2)
                    await w.done({"by": j})
                finally:
                    await w.close()

            await asyncio.gather(*(work(s, j) for s, j in subs.items()))
            await leader.wait_all_done(STEP)
            await leader.finish()

    async def settle(self, timeout: float) -> None:
        """Every outbox drained (acked or finally refused)."""
        async def drain(c: Client) -> None:
            with contextlib.suppress(TimeoutError):
                await c.flush(timeout)
        await asyncio.gather(*(drain(c) for c in self.clients))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.stack.aclose(), 30)

