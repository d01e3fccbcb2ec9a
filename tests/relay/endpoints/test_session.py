"""relay/endpoints/session.py: one native-protocol connection, driven through a real ``/ws``
socket of a real relay (uvicorn on port 0): the challenge and hello, publish answers (ok with
seq, dup, refusal codes, each echoing its rid), sub/unsub, the session's limits and batched
frames (several frames in one WebSocket message, answered in order)."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collab.events import Event, hello_bytes
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.ops.runner import Running, serving
from tests.conftest import Backend, make_config
from tests.rawclient import Raw


def synced(feed: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["t"] == "synced" and f["feed"] == feed


def note(key: Keypair, feed: str, n: int) -> Event:
    return Event.create(key, feed, "note.add", {"n": n}, ts=1_700_000_000_000 + n)


async def test_challenge_then_hello_welcomes_the_key(relay: Running) -> None:
    raw = await Raw.connect(relay.ws_url)
    try:
        ch = raw.challenge
        assert ch["relay"] == relay.relay.hub.relay_key.public_hex and len(ch["nonce"]) == 64
        key = Keypair.generate()
        welcome = await raw.hello(key)
        assert welcome == {"t": "welcome", "key": key.public_hex}
        # hello again with the same key is fine; another key on this connection is refused
        again = await raw.hello(key)
        assert again["t"] == "welcome"
        other = Keypair.generate()
        sig = other.sign(hello_bytes(other.public_hex, ch["nonce"], ch["relay"])).hex()
        err = await raw.request({"t": "hello", "key": other.public_hex, "sig": sig}, "h2")
        assert err["t"] == "error" and err["code"] == "invalid" and "another key" in err["message"]
    finally:
        await raw.close()


async def test_a_bad_hello_is_refused_and_the_connection_stays_anonymous(relay: Running) -> None:
    raw = await Raw.connect(relay.ws_url)
    try:
        key = Keypair.generate()
        err = await raw.request({"t": "hello", "key": key.public_hex, "sig": "zz"}, "h1")
        assert err["code"] == "malformed" and err["rid"] == "h1"
        wrong = key.sign(hello_bytes(key.public_hex, "00" * 32, raw.challenge["relay"])).hex()  # not our nonce
        err = await raw.request({"t": "hello", "key": key.public_hex, "sig": wrong}, "h2")
        assert err["code"] == "bad_signature" and err["rid"] == "h2"
        assert not any(f["t"] == "welcome" for f in raw.frames)
        pong = await raw.request({"t": "ping"}, "p1")
        assert pong == {"t": "pong", "rid": "p1"}
    finally:
        await raw.close()


async def test_publish_answers_carry_the_rid_seq_dup_and_refusal_codes(relay: Running) -> None:
    key = Keypair.generate()
    raw = await Raw.connect(relay.ws_url, key)
    try:
        feed = "misc/session-pub"
        first, second = note(key, feed, 1), note(key, feed, 2)
        ok1 = await raw.request({"t": "pub", "event": first.to_wire()}, "a")
        assert ok1 == {"t": "ok", "feed": feed, "id": first.id, "seq": 1, "rid": "a"}
        ok2 = await raw.request({"t": "pub", "event": second.to_wire()}, "b")
        assert ok2["seq"] == 2 and "dup" not in ok2
        dup = await raw.request({"t": "pub", "event": first.to_wire()}, "c")
        assert dup == {"t": "ok", "feed": feed, "id": first.id, "seq": 1, "dup": True, "rid": "c"}
        # a tampered event: refused with its feed and id, before it reaches the log
        bad = {**note(key, feed, 3).to_wire(), "body": {"n": 99}}
        err = await raw.request({"t": "pub", "event": bad}, "d")
        assert err["t"] == "error" and err["rid"] == "d" and err["code"] in ("bad_signature", "invalid")
        assert err["id"] == bad["id"]
        # not an event at all
        err = await raw.request({"t": "pub", "event": {"feed": feed}}, "e")
        assert err["t"] == "error" and err["rid"] == "e"
        assert (await raw.request({"t": "pub", "event": note(key, feed, 4).to_wire()}, "f"))["seq"] == 3
    finally:
        await raw.close()


async def test_sub_backlog_live_and_unsub(relay: Running) -> None:
    key = Keypair.generate()
    writer, reader = await Raw.connect(relay.ws_url, key), await Raw.connect(relay.ws_url, Keypair.generate())
    try:
        feed = "misc/session-sub"
        for n in (1, 2):
            assert (await writer.request({"t": "pub", "event": note(key, feed, n).to_wire()}, f"w{n}"))["t"] == "ok"
        await reader.send({"t": "sub", "feed": feed, "since": 0, "rid": "s"})
        synced = await reader.wait(lambda f: f["t"] == "synced")
        assert synced["feed"] == feed and synced["seq"] == 2
        recs = [f["rec"]["seq"] for f in reader.frames if f["t"] == "rec"]
        assert recs == [1, 2]  # the backlog, in order, before synced
        err = await reader.request({"t": "sub", "feed": feed, "since": 0}, "s2")
        assert err["code"] == "invalid" and "already subscribed" in err["message"]
        err = await reader.request({"t": "sub", "feed": feed, "since": -1}, "s3")
        assert err["code"] == "malformed"
        # live
        ev = note(key, feed, 3)
        await writer.request({"t": "pub", "event": ev.to_wire()}, "w3")
        live = await reader.wait(lambda f: f["t"] == "rec" and f["rec"]["seq"] == 3)
        assert live["rec"]["event"]["id"] == ev.id
        gone = await reader.request({"t": "unsub", "feed": feed}, "u")
        assert gone == {"t": "unsubbed", "feed": feed, "rid": "u"}
        mark = len(reader.frames)
        await writer.request({"t": "pub", "event": note(key, feed, 4).to_wire()}, "w4")
        # a ping after the publish's ack: anything for the feed would have come before its pong
        await reader.request({"t": "ping"}, "after")
        assert not [f for f in reader.frames[mark:] if f.get("feed") == feed and f["t"] == "rec"]
    finally:
        await writer.close()
        await reader.close()


async def test_a_batch_message_is_answered_frame_by_frame_in_order(relay: Running) -> None:
    key = Keypair.generate()
    raw = await Raw.connect(relay.ws_url, key)
    try:
        feed = "misc/session-batch"
        evs = [note(key, feed, n) for n in range(1, 6)]
        batch = "\n".join(json.dumps({"t": "pub", "event": e.to_wire(), "rid": f"b{i}"}) for i, e in enumerate(evs))
        await raw.send(batch + '\n{"t":"ping","rid":"end"}')
        await raw.wait(lambda f: f.get("rid") == "end")  # handled at once; the acks follow the store
        await raw.wait(lambda f: f.get("rid") == "b4")
        oks = [f for f in raw.frames if f["t"] == "ok"]
        assert [f["rid"] for f in oks] == [f"b{i}" for i in range(5)]
        assert [f["seq"] for f in oks] == [1, 2, 3, 4, 5]
        # a bad line in a batch is answered alone (unparsable: no rid); its neighbours are handled
        mark = len(raw.frames)
        await raw.send('{"t":"ping","rid":"x1"}\n{"t":"nope","rid":"x2"}\n{"t":"ping","rid":"x3"}')
        await raw.wait(lambda f: f.get("rid") == "x3", start=mark)
        tail = [(f["t"], f.get("rid"), f.get("code")) for f in raw.frames[mark:]]
        assert tail == [("pong", "x1", None), ("error", None, "malformed"), ("pong", "x3", None)]
    finally:
        await raw.close()


async def test_the_session_enforces_its_limits(tmp_path: Path, backend: Backend) -> None:
    limits = Limits(max_frame_bytes=4096, max_event_bytes=600, max_subscriptions=2, events_per_sec_key=0.001,
                    burst_key=3)
    async with serving(make_config(tmp_path / "r", backend, limits=limits)) as running:
        key = Keypair.generate()
        raw = await Raw.connect(running.ws_url, key)
        try:
            await raw.send("x" * 5000)
            err = await raw.wait(lambda f: f["t"] == "error")
            assert err["code"] == "too_large" and "4096" in err["message"]
            big = Event.create(key, "misc/lim", "note.add", {"text": "y" * 800})
            err = await raw.request({"t": "pub", "event": big.to_wire()}, "big")
            assert err["code"] == "too_large" and err["id"] == big.id
            # a forged signature is found first (checked off the event loop, or here when another
            # check refuses it): bad_signature, with the id but no feed (docs/protocol.md 13.3)
            mallory = Keypair.generate()
            for ev, rid in ((big, "forged-big"), (note(key, "misc/lim", 9), "forged")):
                forged = {**ev.to_wire(), "sig": mallory.sign(ev.signing_bytes()).hex()}
                err = await raw.request({"t": "pub", "event": forged}, rid)
                assert err == {"t": "error", "code": "bad_signature", "message": err["message"], "rid": rid,
                               "id": ev.id}, err
            for feed in ("misc/s1", "misc/s2"):
                await raw.send({"t": "sub", "feed": feed, "since": 0})
                await raw.wait(synced(feed))
            err = await raw.request({"t": "sub", "feed": "misc/s3", "since": 0}, "s3")
            assert err["code"] == "limit_exceeded"
            # the key's burst: the big event took no token (it was refused before), nor the forged ones
            # (refunded), three more pass
            answers = [await raw.request({"t": "pub", "event": note(key, "misc/lim", n).to_wire()}, f"r{n}")
                       for n in range(1, 6)]
            assert [a["t"] for a in answers[:2]] == ["ok", "ok"]
            assert answers[-1]["code"] == "rate_limited"
        finally:
            await raw.close()
