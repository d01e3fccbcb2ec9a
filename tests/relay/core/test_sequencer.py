"""relay/core/sequencer.py: one process of a Redis site sequences a feed; the others hand it
their publishes, and when it dies (SIGKILL) another takes the feed over within the lease's TTL
with nothing acknowledged lost.

Real parts: a private ``redis-server`` (AOF, fsync always) and two real ``colony serve``
processes of one site (one key prefix, one relay key), raw WebSocket clients.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.errors import RelayError, Unavailable
from collab.events import Event, Record
from collab.keys import Keypair
from collab.replay import fetch_records, replay
from relay.core.sequencer import event_row, refusal, row_event
from relay.ops.runner import serving
from tests.conftest import Backend, make_config
from tests.procs import RelayProc, start_relay_proc
from tests.rawclient import Raw
from tests.redis_server import RedisServer
from tests.wait import eventually

pytestmark = pytest.mark.timeout(90)

FEED = "misc/hot"


def test_an_event_crosses_the_hand_off_channel_unchanged() -> None:
    ev = Event.create(Keypair.generate(), FEED, "note", {"n": 1, "text": "héllo"})
    back = row_event(event_row(ev))
    assert back == ev and back.size == ev.size and back.verify()


def test_refusals_keep_their_code() -> None:
    assert isinstance(refusal("unavailable", "x"), Unavailable)
    exc = refusal("invalid", "bad body")
    assert isinstance(exc, RelayError) and exc.code == "invalid" and exc.message == "bad body"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer.start(tmp_path / "redis", appendonly=True)
    yield srv
    srv.stop(graceful=False)


async def health(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(f"{url}/health")).json()  # type: ignore[no-any-return]


async def publish(raw: Raw, ev: Event, timeout: float = 10.0) -> dict[str, Any]:
    return await raw.request({"t": "pub", "event": ev.to_wire()}, ev.id[:24], timeout=timeout)


async def test_a_publish_handed_off_is_answered_with_the_sequencer_s_seq_or_refusal(
        redis_server: RedisServer, tmp_path: Path) -> None:
    backend = Backend("redis", redis_server.url, f"seq{uuid.uuid4().hex[:8]}")
    key_file = Keypair.generate().save(tmp_path / "site.key")
    feed, k = "doc/handoff", Keypair.generate()
    cfg = [make_config(tmp_path / n, backend, "s", relay_key_file=key_file) for n in ("a", "b")]
    async with serving(cfg[0]) as a, serving(cfg[1]) as b:
        ra = await Raw.connect(f"ws://{a.host}:{a.port}/ws", k)
        rb = await Raw.connect(f"ws://{b.host}:{b.port}/ws", k)
        try:
            edit = {"update": "AQEBAAQBBHRleHQFaGVsbG8A"}  # a real Yjs edit
            assert (await publish(ra, Event.create(k, feed, "doc.update", edit)))["seq"] == 1  # A sequences
            ev = Event.create(k, feed, "doc.update", edit, ts=1)
            assert (await publish(rb, ev))["seq"] == 2  # handed to A
            # answered by its record: B acks once it committed (and sent) it, with no answer from A
            assert b.relay.hub.feeds[feed].seq == 2 and not b.relay.hub.handoff.inflight  # type: ignore[union-attr]
            again = await rb.request({"t": "pub", "event": ev.to_wire()}, "again", timeout=10)  # A's answer: dup
            assert again["t"] == "ok" and again["seq"] == 2 and again.get("dup") is True, again
            bad = await publish(rb, Event.create(k, feed, "doc.update", {"update": "AAAA"}))  # empty update
            assert bad["t"] == "error" and bad["code"] == "invalid", bad
            hub_a, hub_b = a.relay.hub, b.relay.hub
            assert hub_a.handoff is not None and hub_b.handoff is not None
            assert hub_b.handoff.handed_off == 3 and hub_a.handoff.served == 3
            assert hub_a.storage.leases.held.keys() == {feed} and not hub_b.storage.leases.held  # type: ignore[attr-defined]
            await eventually(lambda: hub_b.feeds[feed].seq == 2, 10, "B to fold A's records")
        finally:
            await ra.close()
            await rb.close()


async def test_a_handed_off_publish_whose_record_message_is_lost_is_acked_from_the_log(
        redis_server: RedisServer, tmp_path: Path) -> None:
    # acks of handed-off publishes come from their records on the feed's channel; pub/sub may
    # lose one: the requester then reads the log (after STALL), not waiting for the 2 s resend
    backend = Backend("redis", redis_server.url, f"seq{uuid.uuid4().hex[:8]}")
    key_file = Keypair.generate().save(tmp_path / "site.key")
    feed, k = "doc/lost", Keypair.generate()
    # no anti-entropy sweep in the test's time (every min(sync_interval, presence_ttl/3): it catches B up too)
    cfg = [make_config(tmp_path / n, backend, "s", relay_key_file=key_file, sync_interval=60,
                       presence_ttl=180) for n in ("a", "b")]
    async with serving(cfg[0]) as a, serving(cfg[1]) as b:
        ra = await Raw.connect(f"ws://{a.host}:{a.port}/ws", k)
        rb = await Raw.connect(f"ws://{b.host}:{b.port}/ws", k)
        try:
            edit = {"update": "AQEBAAQBBHRleHQFaGVsbG8A"}
            assert (await publish(ra, Event.create(k, feed, "doc.update", edit)))["seq"] == 1  # A sequences
            assert (await publish(rb, Event.create(k, feed, "doc.update", edit, ts=1)))["seq"] == 2
            hub_b = b.relay.hub
            await hub_b.bus.unwatch(feed)  # B misses what A appends next, as if pub/sub lost it
            t0 = time.monotonic()
            got = await publish(rb, Event.create(k, feed, "doc.update", edit, ts=2))
            assert got["t"] == "ok" and got["seq"] == 3 and not got.get("dup"), got
            assert time.monotonic() - t0 < 1.9  # the log, not the resend (RESEND = 2 s)
            assert hub_b.feeds[feed].seq == 3 and hub_b.handoff is not None and not hub_b.handoff.inflight
        finally:
            await ra.close()
            await rb.close()


async def test_sigkilled_sequencer_hands_the_feed_over_within_3_s_and_nothing_acked_is_lost(
        private_redis: RedisServer, tmp_path: Path) -> None:
    key_file = Keypair.generate().save(tmp_path / "site.key")
    site = ("--redis", private_redis.url, "--redis-prefix", f"seq{uuid.uuid4().hex[:8]}", "--relay-key", str(key_file))
    a, b = await asyncio.gather(*(start_relay_proc(tmp_path / n, *site) for n in ("a", "b")))
    procs: list[RelayProc] = [a, b]
    raws: list[Raw] = []
    try:
        # a publish through A first: A is granted the feed's lease and sequences it for the site
        first = Keypair.generate()
        raws.append(await Raw.connect(a.ws_url, first))
        reply = await publish(raws[-1], Event.create(first, FEED, "note", {"n": -1}))
        assert reply["t"] == "ok" and reply["seq"] == 1, reply
        assert (await health(a.url))["storage"]["leases_held"] == 1

        # writers on B: their publishes are handed to A, acked with A's seq
        acked: dict[str, tuple[int, float]] = {}  # event id -> (seq, when acked)
        sent: dict[str, float] = {}
        refused: list[dict[str, Any]] = []
        stop = asyncio.Event()

        async def flow(raw: Raw, key: Keypair) -> None:
            n = 0
            while not stop.is_set():
                batch = [Event.create(key, FEED, "note", {"n": n + k}) for k in range(4)]
                n += len(batch)
                for ev in batch:
                    sent[ev.id] = time.monotonic()
                    await raw.send({"t": "pub", "event": ev.to_wire(), "rid": ev.id})
                for ev in batch:
                    reply = await raw.wait(lambda f, i=ev.id: f.get("rid") == i, timeout=15)
                    if reply["t"] == "ok":
                        acked[ev.id] = (reply["seq"], time.monotonic())
                    else:
                        refused.append(reply)
                await asyncio.sleep(0.01)  # a pace, far from the per-key rate limit

        keys = [Keypair.generate() for _ in range(3)]
        raws.extend([await Raw.connect(b.ws_url, k) for k in keys])
        flowing = asyncio.gather(*(flow(r, k) for r, k in zip(raws[1:], keys, strict=True)))
        try:
            await eventually(lambda: len(acked) >= 40, 20, "acks for B's writers")
            hb = (await health(b.url))["storage"]
            assert hb["handed_off"] >= 40 and hb["leases_held"] == 0, hb
            assert (await health(a.url))["storage"]["served"] >= 40

            killed = time.monotonic()
            a.kill9()
            await a.proc.wait()
            n_at_kill = len(acked)
            await eventually(lambda: len(acked) >= n_at_kill + 40, 20, "B to sequence the feed itself")
        finally:
            stop.set()
            await flowing
        after = [t for i, (_, t) in acked.items() if sent[i] > killed]
        failover = min(after) - killed
        assert failover < 3.0, f"the feed moved to B {failover:.2f}s after the SIGKILL"
        # nothing is refused: the hand-offs A never answered were sequenced by B (once each)
        assert refused == [], refused[:3]
        hb = (await health(b.url))["storage"]
        assert hb["leases_held"] == 1 and hb["leases_granted"] >= 1 and hb["rerouted"] >= 1, hb
        assert hb["head_moved"] == 0 and hb["fenced"] == 0, hb

        # the log: dense, one chain, verified; every acked event stored at its acked seq
        raw_log = await fetch_records(b.url, FEED)
        result = replay(raw_log, feed=FEED)
        assert result.verified, result.anomalies[:5]
        recs = [Record.from_wire(r) for r in raw_log]
        assert [r.seq for r in recs] == list(range(1, len(recs) + 1))
        stored = {r.event.id: r.seq for r in recs}
        assert len(stored) == len(recs), "an event was sequenced twice"
        lost = [i for i, (seq, _) in acked.items() if stored.get(i) != seq]
        assert not lost, f"{len(lost)} acknowledged events are not stored at their acked seq"
    finally:
        for r in raws:
            await r.close()
        for p in procs:
            if p.proc.returncode is None:
                await p.stop()
