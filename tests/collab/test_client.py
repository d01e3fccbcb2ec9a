"""The async client against a real relay on a real port: outbox, resubscribe, reconnect."""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from collab import frames
from collab.client import Client, Subscription, ws_url
from collab.errors import AuthRequired, ColonyError, ProtocolError, RelayError
from collab.events import Event, Record, b64, hello_bytes
from collab.keys import Keypair
from collab.protocol import Presence
from collab.replay import fetch_records
from relay.core.limits import Limits
from relay.ops.runner import Running
import itertools

FAST = {"backoff_base": 0.02, "backoff_max": 0.2}


async def take(sub: Subscription, n: int, timeout: float = 10.0) -> list[Any]:
    """The next ``n`` items of a subscription (fails after ``timeout``)."""
    async def go() -> list[Any]:
        out: list[Any] = []
        async for item in sub:
            out.append(item)
            if len(out) == n:
                break
        return out

    return await asyncio.wait_for(go(), timeout)


def drop(client: Client) -> None:
    """Cut the TCP connection under the client, as a network failure would."""
    ws = client.websocket
    assert ws is not None
    ws.transport.abort()


def watch(pred: Callable[[Presence], bool]) -> tuple[asyncio.Future[None], Callable[[Presence], None]]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def cb(ev: Presence) -> None:
        if pred(ev) and not fut.done():
            fut.set_result(None)

    return fut, cb


def test_ws_url_from_http_base() -> None:
    assert ws_url("http://127.0.0.1:9/") == "ws://127.0.0.1:9/ws"
    assert ws_url("https://relay.example/colony") == "wss://relay.example/colony/ws"
    assert ws_url("ws://h:1/ws") == "ws://h:1/ws"


async def test_publish_then_subscribers_see_records_in_order(relay: Running) -> None:
    ka, kb = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, ka) as a, Client(relay.ws_url, kb) as b:
        assert a.relay == relay.relay.hub.relay_key.public_hex
        joined, on_presence = watch(lambda ev: ka.public_hex in ev.keys and ev.op in ("join", "list"))
        sub_b = await b.subscribe("chat/r", on_presence=on_presence)
        await sub_b.wait_synced(5)
        acks = [await a.publish("chat/r", "msg", {"n": i}) for i in range(5)]
        assert [x.seq for x in acks] == [1, 2, 3, 4, 5] and not any(x.dup for x in acks)
        recs = await take(sub_b, 5)
        assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
        assert [r.event.body["n"] for r in recs] == [0, 1, 2, 3, 4]
        assert {r.event.author for r in recs} == {ka.public_hex}
        assert recs[0].event.ctx == 0  # a was not subscribed: it had seen nothing
        reply = await b.publish("chat/r", "msg", {"reply": True})
        assert reply.seq == 6
        [own] = await take(sub_b, 1)
        assert own.event.ctx == 5 and own.event.author == kb.public_hex  # ctx = last seq b had seen
        sub_a = await a.subscribe("chat/r", since=6)
        await sub_a.wait_synced(5)
        await asyncio.wait_for(joined, 5)
        assert sub_b.participants == {ka.public_hex, kb.public_hex}
        assert sub_a.seq == 6


async def test_refused_publishes_raise_relay_error(relay: Running) -> None:
    owner, stranger = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, owner) as o, Client(relay.url, stranger) as s:
        with pytest.raises(RelayError) as info:
            await o.publish("doc/x", "msg", {"text": "not a doc update"})
        assert info.value.code == "invalid"
        with pytest.raises(RelayError, match="invalid"):
            await o.publish("doc/x", "doc.update", {"update": b64(b"hello world")})
        await o.publish("chat/secret", "feed.policy", {"policy": "members"})
        with pytest.raises(RelayError) as info:
            await s.publish("chat/secret", "msg", {"hi": 1})
        assert info.value.code == "unauthorized"
        sub = await s.subscribe("chat/secret")
        with pytest.raises(RelayError, match="unauthorized"):
            await sub.wait_synced(5)
        assert o.pending == 0 and s.pending == 0
        assert s.connected  # refusals do not cost the connection


async def test_pinned_relay_key(relay: Running) -> None:
    with pytest.raises(ProtocolError, match="pinned"):
        async with Client(relay.url, Keypair.generate(), relay_key=Keypair.generate().public_hex):
            pass
    real = relay.relay.hub.relay_key.public_hex
    async with Client(relay.url, Keypair.generate(), relay_key=real) as c:
        assert (await c.publish("chat/pin", "msg", {})).seq == 1


async def test_publishing_needs_a_key_but_reading_does_not(relay: Running) -> None:
    async with Client(relay.url, Keypair.generate()) as writer, Client(relay.url) as reader:
        await writer.publish("chat/open", "msg", {"x": 1})
        with pytest.raises(AuthRequired):
            await reader.publish("chat/open", "msg", {"x": 2})
        sub = await reader.subscribe("chat/open")
        [rec] = await take(sub, 1)
        assert rec.event.body == {"x": 1}


async def test_outbox_resend_across_forced_disconnect_is_exactly_once(relay: Running) -> None:
    key = Keypair.generate()
    feed = "chat/outbox"
    async with Client(relay.url, key, **FAST) as a, Client(relay.url) as watcher:
        events = [Event.create(key, feed, "msg", {"n": i}) for i in range(12)]
        cut_once: list[bool] = []

        def on_record(rec: Record) -> None:
            # the relay has stored event 3; cut the publisher before its ack can arrive
            if rec.event.id == events[3].id and not cut_once and a.websocket is not None:
                cut_once.append(True)
                drop(a)

        sub = await watcher.subscribe(feed, on_record=on_record)
        await sub.wait_synced(5)
        futs = [a.submit(ev) for ev in events[:6]]
        await asyncio.wait_for(asyncio.gather(*futs), 10)
        futs += [a.submit(ev) for ev in events[6:]]
        drop(a)  # these were queued but not necessarily sent
        acks = await asyncio.wait_for(asyncio.gather(*futs), 10)
        assert a.reconnects >= 2 and cut_once
        await sub.wait_seq(12, 10)

    records = await fetch_records(relay.url, feed)
    ids = [r["event"]["id"] for r in records]
    assert len(records) == 12 and Counter(ids) == Counter(ev.id for ev in events)
    stored_seq = {r["event"]["id"]: r["seq"] for r in records}
    assert all(ack.seq == stored_seq[ack.id] for ack in acks)  # acks point at the one stored copy
    assert [ack.id for ack in acks] == [ev.id for ev in events]


async def test_resent_event_already_stored_is_acked_as_dup(relay: Running) -> None:
    key = Keypair.generate()
    async with Client(relay.url, key, backoff_base=0.3, backoff_max=0.6) as a, Client(relay.url, key) as twin:
        ev = a.create_event("chat/dup", "msg", {"once": True})
        first = await twin.publish_event(ev)  # the relay stores it via another connection
        drop(a)
        await a.wait_disconnected(5)
        assert not a.connected
        fut = a.submit(ev)  # offline: waits in the outbox
        assert a.pending == 1
        again = await asyncio.wait_for(fut, 10)
        assert again.dup and again.seq == first.seq == 1 and again.id == ev.id
        assert a.pending == 0
    records = await fetch_records(relay.url, "chat/dup")
    assert [r["event"]["id"] for r in records] == [ev.id]


async def test_flush_timeout_leaves_the_event_in_the_outbox(relay: Running) -> None:
    async with Client(relay.url, Keypair.generate(), backoff_base=0.4, backoff_max=0.8) as c:
        drop(c)
        await c.wait_disconnected(5)
        fut = c.submit(c.create_event("chat/later", "msg", {"x": 1}))
        with pytest.raises(asyncio.TimeoutError):
            await c.flush(0.01)
        assert not fut.done() and c.pending == 1
        await c.flush(10)
        assert fut.result().seq == 1 and c.pending == 0


async def test_resubscribe_resumes_from_last_seq_without_duplicates_or_gaps(relay: Running) -> None:
    feed = "chat/resume"
    async with Client(relay.url, Keypair.generate()) as pub, Client(relay.url, **FAST) as s:
        sub = await s.subscribe(feed)
        await sub.wait_synced(5)
        got: list[Record] = []
        for round_ in range(3):
            for i in range(7):
                await pub.publish(feed, "msg", {"round": round_, "i": i})
            got += await take(sub, 7)
            drop(s)
            await s.wait_disconnected(5)
        await s.wait_connected(5)
        await sub.wait_synced(5)
        await pub.publish(feed, "msg", {"last": True})
        got += await take(sub, 1)
        assert [r.seq for r in got] == list(range(1, 23))
        assert [r.event.body for r in got[:8]] == [{"round": 0, "i": i} for i in range(7)] + [{"round": 1, "i": 0}]
        assert got[-1].event.body == {"last": True}
        assert s.reconnects >= 3
        assert s.protocol.duplicates == 0  # resubscribed with since=<last seq>, not from the start
        for prev, rec in itertools.pairwise(got):
            assert rec.prev == prev.hash


async def test_slow_consumer_cut_with_4008_resumes_by_seq(start_relay: Callable[..., Any]) -> None:
    relay: Running = await start_relay(limits=Limits(max_outbound_frames=8))
    key = Keypair.generate()
    feed = "chat/burst"
    async with Client(relay.url, **FAST) as s:
        sub = await s.subscribe(feed)
        await sub.wait_synced(5)
        # one message with 20 publishes: the relay sequences them as one batch and fans out
        # 20 records at once, more than this subscriber's outbound queue may hold
        async with connect(relay.ws_url) as raw:
            challenge = frames.parse(await raw.recv(), frames.RELAY_FRAMES)
            sig = key.sign(hello_bytes(key.public_hex, challenge["nonce"], challenge["relay"])).hex()
            await raw.send(frames.encode({"t": "hello", "key": key.public_hex, "sig": sig}))
            assert frames.parse(await raw.recv(), frames.RELAY_FRAMES)["t"] == "welcome"
            batch = [Event.create(key, feed, "msg", {"n": i}) for i in range(20)]
            await raw.send("\n".join(frames.encode({"t": "pub", "event": ev.to_wire()}) for ev in batch))
            got = await take(sub, 20)
        assert [r.seq for r in got] == list(range(1, 21))
        assert [r.event.id for r in got] == [ev.id for ev in batch]
        assert s.reconnects >= 1 and s.last_close[0] == 4008


async def test_full_queue_pauses_the_feed_and_resumes_without_loss(relay: Running) -> None:
    feed = "chat/flood"
    async with Client(relay.url, Keypair.generate()) as pub, Client(relay.url) as s:
        sub = await s.subscribe(feed, max_queue=4)
        await sub.wait_synced(5)
        acks = await asyncio.gather(*(pub.publish(feed, "msg", {"n": i}) for i in range(30)))
        assert sorted(a.seq for a in acks) == list(range(1, 31))
        await pub.ping(5)
        got = await take(sub, 30)
        assert [r.seq for r in got] == list(range(1, 31))
        assert sub.queued == 0 and not sub.paused
        await sub.wait_synced(5)  # live again after the last resume
        await pub.publish(feed, "msg", {"after": True})
        [last] = await take(sub, 1)
        assert last.seq == 31


async def test_closing_a_subscription_ends_iteration(relay: Running) -> None:
    async with Client(relay.url, Keypair.generate()) as c:
        sub = await c.subscribe("chat/close")
        await sub.wait_synced(5)
        await c.publish("chat/close", "msg", {})
        [first] = await take(sub, 1)
        await sub.close()
        await c.publish("chat/close", "msg", {})
        assert [item async for item in sub] == []
        assert first.seq == 1 and c.subscription("chat/close") is None
        again = await c.subscribe("chat/close", since=1)
        [rec] = await take(again, 1)
        assert rec.seq == 2


async def test_relay_rate_limit_is_retried_with_backoff(start_relay: Callable[..., Any]) -> None:
    relay: Running = await start_relay(limits=Limits(events_per_sec_key=40.0, burst_key=5))
    async with Client(relay.url, Keypair.generate(), backoff_base=0.05, backoff_max=0.3, retry_limit=None) as c:
        acks = await asyncio.wait_for(asyncio.gather(*(c.publish("chat/rl", "msg", {"n": i}) for i in range(20))), 20)
    assert sorted(a.seq for a in acks) == list(range(1, 21))
    async with httpx.AsyncClient() as http:
        info = (await http.get(relay.url + "/feeds/chat/rl")).json()
    assert info["seq"] == 20


async def test_reconnect_disabled_fails_instead_of_waiting(relay: Running) -> None:
    async with Client(relay.url, Keypair.generate(), reconnect=False) as c:
        drop(c)
        await c.wait_disconnected(5)
        with pytest.raises(ColonyError, match="reconnect disabled"):
            await c.wait_connected(5)
        with pytest.raises(ColonyError):
            await c.publish("chat/x", "msg", {})


async def test_unreachable_relay_raises_on_enter() -> None:
    with pytest.raises(ConnectionRefusedError):
        async with Client("http://127.0.0.1:9", Keypair.generate()):
            pass
