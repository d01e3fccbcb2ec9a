"""Colony on a real Redis Cluster: three masters, three relay processes, one site.

Agents spread over three ``colony serve`` processes (one shared key prefix, one shared relay
key, all pointed at a single cluster node) co-edit several doc feeds whose keys live on
different masters. Every feed ends up with one dense, verifiable order that subscribers on
every process see identically, and every document converges to the same text with every edit.
The relays' sharded pub/sub (one connection per master) survives its connections being cut.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.client import Client
from collab.doc import Doc
from collab.events import Record
from collab.keys import Keypair
from collab.replay import fetch_records, replay
from relay.ops.runner import serving
from relay.storage.redis import feed_key  # the relay's own key scheme
from tests.conftest import make_config
from tests.procs import RelayProc, start_relay_proc
from tests.redis_cluster import RedisCluster
from tests.wait import eventually

# chosen so that their hash tags ({feed}) fall in slots of all three masters (asserted below)
FEEDS = ("doc/cluster-north", "doc/cluster-south", "doc/cluster-east", "doc/cluster-west")
PROCS, AGENTS, ROUNDS = 3, 6, 8
FAST = {"backoff_base": 0.02, "backoff_max": 0.2}
TOKEN = re.compile(r"\[[^\[\]]*\]")
KEY_PARTS = ("head", "log", "ids", "snap", "ch", "presence")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    c = RedisCluster.start(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield c
    finally:
        c.stop()


def insert_token(doc: Doc, token: str, rng: random.Random) -> None:
    """Insert between whole tokens, so concurrent inserts never split one."""
    text = str(doc.text)
    spots = [0] + [i + 1 for i, c in enumerate(text) if c == "]"]
    doc.text.insert(rng.choice(spots), token)


async def test_agents_on_three_processes_converge_on_a_three_master_cluster(
        cluster: RedisCluster, tmp_path: Path) -> None:
    prefix = f"cl{uuid.uuid4().hex[:8]}"

    # -- the feeds' keys: one slot per feed, feeds spread over the masters ------------------
    owners: dict[str, int] = {}
    for feed in FEEDS:
        slots = {cluster.keyslot(feed_key(prefix, feed, part)) for part in KEY_PARTS}
        assert len(slots) == 1, f"{feed}: its keys span slots {slots}"
        owners[feed] = cluster.owner_of(feed_key(prefix, feed, "head"))
    masters = set(owners.values())
    assert masters <= set(cluster.ports)
    assert len(masters) >= 2, f"the feeds must live on different masters: {owners}"

    # -- three relay processes of one site ---------------------------------------------------
    relay_key = Keypair.generate()
    key_file = relay_key.save(tmp_path / "relay.key")
    args = ("--redis", cluster.url, "--redis-prefix", prefix, "--relay-key", str(key_file))
    started = await asyncio.gather(*(start_relay_proc(tmp_path / f"r{i}", *args) for i in range(PROCS)),
                                   return_exceptions=True)
    procs: list[RelayProc] = [p for p in started if isinstance(p, RelayProc)]
    try:
        for p in started:
            if isinstance(p, BaseException):
                raise p
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
            for p in procs:
                health = (await http.get(f"{p.url}/health")).json()
                assert health["ok"] is True, health
                assert health["storage"]["cluster"] is True, health
                assert health["relay"] == relay_key.public_hex, "one site, one relay identity"

            # observers, one per process, subscribed to every feed before anyone writes
            seen: dict[tuple[int, str], list[Record]] = {(i, f): [] for i in range(PROCS) for f in FEEDS}
            observers: list[Client] = []
            subs = {}
            for i, p in enumerate(procs):
                obs = await stack.enter_async_context(Client(p.url, Keypair.generate(), relay_key=relay_key.public_hex,
                                                             **FAST))
                observers.append(obs)
                for f in FEEDS:
                    subs[i, f] = await obs.subscribe(f, on_record=seen[i, f].append)
            await asyncio.gather(*(s.wait_synced(10) for s in subs.values()))

            # writers: agent a talks to process a % 3 and edits every feed
            keys = [Keypair.generate() for _ in range(AGENTS)]
            home = {k.public_hex: a % PROCS for a, k in enumerate(keys)}
            docs: dict[tuple[int, str], Doc] = {}
            for a, key in enumerate(keys):
                client = await stack.enter_async_context(
                    Client(procs[a % PROCS].url, key, relay_key=relay_key.public_hex, **FAST))
                for f in FEEDS:
                    docs[a, f] = await stack.enter_async_context(Doc(client, f))
            await asyncio.gather(*(d.synced(10) for d in docs.values()))

            async def write(a: int) -> None:
                rng = random.Random(a)
                for r in range(ROUNDS):
                    for f in FEEDS:
                        insert_token(docs[a, f], f"[{a}:{f}:{r}]", rng)
                    await asyncio.sleep(rng.random() * 0.02)  # interleave with the others' edits

            await asyncio.gather(*(write(a) for a in range(AGENTS)))

            # -- convergence: every doc applies every record; one text per feed --------------
            n = AGENTS * ROUNDS
            tops = {f: max([await docs[a, f].flushed(20) for a in range(AGENTS)]) for f in FEEDS}
            assert tops == dict.fromkeys(FEEDS, n), "every edit is one record; seqs are dense"
            await asyncio.gather(*(d.wait_seq(n, 20) for d in docs.values()),
                                 *(s.wait_seq(n, 20) for s in subs.values()))
            texts: dict[str, str] = {}
            for f in FEEDS:
                versions = {str(docs[a, f].text) for a in range(AGENTS)}
                assert len(versions) == 1, f"{f} diverged: {versions}"
                texts[f] = versions.pop()
                tokens = Counter(TOKEN.findall(texts[f]))
                assert set(tokens) == {f"[{a}:{f}:{r}]" for a in range(AGENTS) for r in range(ROUNDS)}
                assert set(tokens.values()) == {1}

            # -- one dense order per feed, identical on every process -------------------------
            for f in FEEDS:
                orders = []
                for i in range(PROCS):
                    recs = seen[i, f]
                    assert [r.seq for r in recs] == list(range(1, n + 1)), f"{f} on process {i} is not dense"
                    orders.append([(r.seq, r.event.id, r.hash) for r in recs])
                assert orders[0] == orders[1] == orders[2], f"processes disagree on the order of {f}"
                authors = Counter(r.event.author for r in seen[0, f])
                assert authors == {k.public_hex: ROUNDS for k in keys}
                assert {home[k] for k in authors} == set(range(PROCS)), "writers went through every process"
                assert {r.relay for r in seen[0, f]} == {relay_key.public_hex}

                # the log as each process serves it over HTTP: the same records, and it verifies
                logs = [await fetch_records(p.url, f, client=http) for p in procs]
                assert logs[0] == logs[1] == logs[2]
                assert [(r["seq"], r["event"]["id"]) for r in logs[0]] == [o[:2] for o in orders[0]]
                result = replay(logs[0], feed=f)
                assert result.verified, result.anomalies
                assert result.seq == n and result.head == orders[0][-1][2]
                assert result.view()["text"] == texts[f]

                # stored on the master owning the feed's slot (asked directly, no redirection)
                node = cluster.ports.index(owners[f])
                assert cluster.cli("XLEN", feed_key(prefix, f, "log"), node=node).strip() == str(n)
                assert cluster.cli("HGET", feed_key(prefix, f, "head"), "seq", node=node).strip() == str(n)

            # -- presence over the cluster (hash per feed, SPUBLISH notices) -----------------
            everyone = {k.public_hex for k in keys} | {o.key.public_hex for o in observers if o.key}
            await eventually(lambda: all(s.participants == everyone for s in subs.values()), 15,
                             "every process to list every participant of every feed")

            # -- listing (its own slot) and health -------------------------------------------
            listed = (await http.get(f"{procs[0].url}/feeds", params={"prefix": "doc/cluster-"})).json()["feeds"]
            assert {(e["feed"], e["seq"]) for e in listed} == {(f, n) for f in FEEDS}
            for p in procs:
                health = (await http.get(f"{p.url}/health")).json()
                assert health["ok"] is True and health["storage"]["cluster"] is True, health
                bus = health["bus"]
                assert bus["connected"] is True and bus["sharded"] is True, bus
                assert bus["channels"] == len(FEEDS) + 1, bus  # + its hand-off channel (relay.core.sequencer)
                assert bus["links"] == len(masters), "one sharded pub/sub connection per master in use"
                assert bus["messages"] > 0, "records of the other processes arrived over sharded pub/sub"

            # -- each master's sharded channel carries an append to the other processes -------
            async def bus_messages(p: RelayProc) -> int:
                return int((await http.get(f"{p.url}/health")).json()["bus"]["messages"])

            n += 1
            for f in FEEDS:  # the feeds cover every master in use
                before = [await bus_messages(p) for p in procs[1:]]
                insert_token(docs[0, f], "[extra]", random.Random(0))  # agent 0 writes through process 0
                assert await docs[0, f].flushed(10) == n
                await asyncio.gather(*(subs[i, f].wait_seq(n, 10) for i in range(1, PROCS)))
                deadline = time.monotonic() + 10
                while True:  # bounded polling: the processes that did not append got the SPUBLISH
                    after = [await bus_messages(p) for p in procs[1:]]
                    if all(a > b for a, b in zip(after, before, strict=True)):
                        break
                    assert time.monotonic() < deadline, f"no pub/sub message for {f} (master {owners[f]}): {after}"
                    await asyncio.sleep(0.02)
                assert [r.event.id for r in seen[1, f]] == [r.event.id for r in seen[2, f]] \
                    == [r.event.id for r in seen[0, f]]
    finally:
        await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)


async def test_killed_sharded_pubsub_connections_reconnect_and_resync(cluster: RedisCluster, tmp_path: Path) -> None:
    """Each relay holds one sharded pub/sub connection per master; when the masters cut them,
    every relay reconnects each one and resyncs, so records appended meanwhile still arrive
    (the anti-entropy sweep is set to 60 s here, so it is not what repairs them)."""
    prefix = f"ck{uuid.uuid4().hex[:8]}"
    masters = {cluster.owner_of(feed_key(prefix, f, "head")) for f in FEEDS}
    key_file = Keypair.generate().save(tmp_path / "relay.key")

    def config(name: str) -> Any:
        return make_config(tmp_path / name, redis_url=cluster.url, redis_prefix=prefix, relay_key_file=key_file,
                           sync_interval=60.0, presence_ttl=180.0)  # the sweep runs every min(sync, ttl/3)

    def pubsub_clients(port: int) -> int:
        out = cluster.cli("CLIENT", "LIST", "TYPE", "pubsub", node=cluster.ports.index(port))
        return sum(1 for line in out.splitlines() if " ssub=0 " not in line and line.strip())

    async with serving(config("a")) as a, serving(config("b")) as b, contextlib.AsyncExitStack() as stack:
        relay_hex = a.relay.hub.relay_key.public_hex
        writer = await stack.enter_async_context(Client(a.url, Keypair.generate(), relay_key=relay_hex, **FAST))
        observer = await stack.enter_async_context(Client(b.url, Keypair.generate(), relay_key=relay_hex, **FAST))
        docs = {f: await stack.enter_async_context(Doc(writer, f)) for f in FEEDS}
        tapes: dict[str, list[Record]] = {f: [] for f in FEEDS}
        subs = {f: await observer.subscribe(f, on_record=tapes[f].append) for f in FEEDS}
        await asyncio.gather(*(s.wait_synced(10) for s in subs.values()), *(d.synced(10) for d in docs.values()))

        rng = random.Random(1)
        for f in FEEDS:
            insert_token(docs[f], "[before]", rng)
        await asyncio.gather(*(d.flushed(10) for d in docs.values()))
        await asyncio.gather(*(s.wait_seq(1, 10) for s in subs.values()))
        for run in (a, b):
            bus = run.relay.hub.bus.health()
            assert bus["connected"] and bus["links"] == len(masters) and bus["reconnects"] == 0, bus
        for port in masters:
            assert pubsub_clients(port) == 2, "each relay has one sharded pub/sub connection on this master"

        for port in masters:  # cut every relay's sharded pub/sub connection on every master
            killed = cluster.cli("CLIENT", "KILL", "TYPE", "pubsub", node=cluster.ports.index(port)).strip()
            assert killed == "2", f"CLIENT KILL TYPE pubsub on {port} killed {killed!r}"
        for k in range(5):  # appended while the relays are reconnecting: their messages are lost
            for f in FEEDS:
                insert_token(docs[f], f"[after:{k}]", rng)
        tops = await asyncio.gather(*(d.flushed(10) for d in docs.values()))
        assert set(tops) == {6}

        await asyncio.gather(*(s.wait_seq(6, 10) for s in subs.values()))
        for run in (a, b):
            await eventually(lambda r=run: r.relay.hub.bus.health()["reconnects"] == len(masters)
                             and r.relay.hub.bus.connected, 10, "every link to reconnect once")
        for port in masters:
            await eventually(lambda p=port: pubsub_clients(p) == 2, 10, f"both relays to resubscribe on {port}")
        for f in FEEDS:
            assert [r.seq for r in tapes[f]] == list(range(1, 7))
            log = await fetch_records(b.url, f)
            assert [(r["seq"], r["event"]["id"]) for r in log] == [(r.seq, r.event.id) for r in tapes[f]]
            result = replay(log, feed=f)
            assert result.verified, result.anomalies
            assert result.view()["text"] == str(docs[f].text)
