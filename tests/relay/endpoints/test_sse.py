"""``GET /feeds/{feed}/stream`` (docs/protocol.md 15.4): Server-Sent Events over real HTTP.

Real relays (both backends, and a two-process Redis site of real subprocesses), a real HTTP
client (httpx streaming, parsed as EventSource does: tests/sseclient.py), and for the stalled
reader a raw socket that stops reading. A stream cut mid-backlog and resumed with
``Last-Event-ID`` must get every record exactly once, in order.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Text

from collab.capability import Capability
from collab.client import Client
from collab.events import GENESIS, Event, now_ms
from collab.httpauth import authorization
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.ops.runner import Running, serving
from tests.conftest import Backend, make_config
from tests.procs import RelayProc, start_relay_proc
from tests.redis_server import RedisServer
from tests.relay.test_slow_readers import rss_kib
from tests.sseclient import SseEvent, SseStream, open_stream
from tests.stalled import TCP_CLOSE, TCP_CLOSE_WAIT
from tests.wait import eventually

pytestmark = pytest.mark.timeout(90)

OWNER, READER = Keypair.generate(), Keypair.generate()
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def publish(url: str, feed: str, n: int, key: Keypair = OWNER, start: int = 0, text: str = "") -> None:
    async with Client(url, key=key) as c:
        for i in range(start, start + n):
            c.submit(c.create_event(feed, "chat.msg", {"text": f"m{i}{text}"}))
        await c.flush(30)


async def stored(url: str, feed: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The feed's records as the HTTP API has them (every page)."""
    out: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url) as http:
        while True:
            body = (await http.get(f"/feeds/{feed}/events", params={"since": len(out), "limit": 1000},
                                   headers=headers)).json()
            out += body["records"]
            if len(out) >= body["seq"]:
                return out


def recs(events: list[SseEvent]) -> list[dict[str, Any]]:
    """The records of ``rec`` events, each checked against its event id."""
    out = []
    for ev in events:
        if ev.event == "rec":
            rec = ev.json()
            assert ev.id == str(rec["seq"])
            out.append(rec)
    return out


async def read_recs(s: SseStream, n: int) -> list[SseEvent]:
    got: list[SseEvent] = []
    while len([e for e in got if e.event == "rec"]) < n:
        ev = await s.next()
        assert ev is not None, got
        got.append(ev)
    return got


# -- resuming ----------------------------------------------------------------------------------
async def test_a_stream_cut_mid_backlog_resumes_by_last_event_id(relay: Running) -> None:
    """Backlog, ``synced``, live; cut after 15 of 40 backlog records, resumed with Last-Event-ID
    (which wins over the URL's ``since``, as a reconnecting EventSource sends both): every record
    exactly once, in order, equal to the stored ones."""
    feed = "chat/resume"
    await publish(relay.ws_url, feed, 40)
    async with open_stream(relay.url, feed, since=0) as s:
        assert s.status == 200 and s.headers["content-type"] == "text/event-stream; charset=utf-8"
        first = await read_recs(s, 15)
        assert s.retry == 2000
        last = s.last_id
    assert last == "15"
    async with open_stream(relay.url, feed, since=0, last_event_id=last) as s:
        second = await s.until("synced")
        synced = second[-1]
        await publish(relay.ws_url, feed, 3, start=40)
        live = await read_recs(s, 3)
    got = recs(first) + recs(second) + recs(live)
    assert [r["seq"] for r in got] == list(range(1, 44))
    assert got == await stored(relay.url, feed)
    assert synced.id == "40" and synced.json() == {"seq": 40, "head": got[40]["prev"]}  # record 40's hash


@sqlite_only
async def test_a_doc_stream_starts_from_the_snapshot(relay: Running) -> None:
    feed = "doc/sse"
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    async with Client(relay.ws_url, key=OWNER) as c:
        for word in ("hello", " world"):
            before = doc.get_state()
            text += word
            await c.publish(feed, "doc.update", {"update": base64.b64encode(doc.get_update(before)).decode()})
    async with open_stream(relay.url, feed) as s:
        got = await s.until("synced")
    assert [(e.event, e.id) for e in got] == [("snapshot", "2"), ("synced", "2")]
    snap = got[0].json()
    assert snap["feed"] == feed and snap["seq"] == 2 and set(snap) == {"feed", "seq", "head", "state", "relay", "rsig"}
    replica: Doc[Any] = Doc()
    replica.apply_update(base64.b64decode(snap["state"]))
    assert str(replica.get("text", type=Text)) == "hello world"


# -- before the stream ---------------------------------------------------------------------------
@sqlite_only
async def test_refusals_are_json_errors_and_an_empty_feed_waits(relay: Running) -> None:
    dm = "dm/" + ".".join(sorted((OWNER.public_hex, READER.public_hex)))
    async with httpx.AsyncClient(base_url=relay.url) as http:
        for path, params, headers, status, code in [
            ("/feeds/chat/x/stream", {"since": "-1"}, {}, 400, "invalid"),
            ("/feeds/chat/x/stream", {"since": "1e3"}, {}, 400, "invalid"),
            ("/feeds/chat/x/stream", {}, {"last-event-id": "x"}, 400, "invalid"),
            ("/feeds/Chat/x/stream", {}, {}, 400, "invalid"),
            ("/feeds/chat/x/stream", {"token": "not a token"}, {}, 400, "invalid"),
            (f"/feeds/{dm}/stream", {}, {}, 403, "unauthorized"),
            ("/feeds/chat/x/stream", {}, {"authorization": "Colony nonsense"}, 400, "invalid"),
        ]:
            r = await http.get(path, params=params, headers=headers)
            assert (r.status_code, r.json()["error"]) == (status, code), (path, params, headers, r.text)
        assert (await http.post("/feeds/chat/x/stream")).status_code == 405
        head = await http.head("/feeds/chat/x/stream")
        assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
    signed = {"authorization": authorization(OWNER, relay.relay.hub.relay_key.public_hex, "GET",
                                             f"/feeds/{dm}/stream", now_ms())}
    async with open_stream(relay.url, dm, headers=signed) as s:  # one of its two keys reads it
        assert [e.event for e in await s.until("synced")] == ["synced"]
    async with open_stream(relay.url, "chat/empty") as s:  # no records yet: it waits
        assert await s.until("synced") == [SseEvent("synced", f'{{"seq":0,"head":"{GENESIS}"}}', "0")]
        await publish(relay.ws_url, "chat/empty", 1)
        assert [r["seq"] for r in recs(await read_recs(s, 1))] == [1]


@sqlite_only
async def test_keepalives_and_the_per_address_cap(start_relay: Any) -> None:
    relay = await start_relay(limits=Limits(stream_keepalive=0.1, max_connections_per_ip=2, max_loaded_feeds=1))
    async with open_stream(relay.url, "chat/ka") as a, open_stream(relay.url, "chat/ka") as b:
        await a.until("synced")
        await b.until("synced")
        async with httpx.AsyncClient(base_url=relay.url) as http:
            r = await http.get("/feeds/chat/ka/stream")
            assert (r.status_code, r.json()["error"], r.headers["retry-after"]) == (429, "too_many_connections", "5")
        assert await a.comment(5) == "ka"
    async with open_stream(relay.url, "chat/ka") as c:  # the two ended: room again
        assert c.status == 200
        await c.until("synced")
        async with httpx.AsyncClient(base_url=relay.url) as http:  # the one feed it may load is busy
            r = await http.get("/feeds/chat/other/stream")
            assert (r.status_code, r.json()["error"]) == (503, "busy") and "retry-after" in r.headers


async def test_the_relay_ends_streams_with_an_end_event(tmp_path: Path) -> None:
    """A stream that falls ``max_outbound_bytes`` behind is ended (section 10, "Slow consumers"):
    with an ``end`` event ``slow_consumer`` when its socket still takes bytes, else by a reset
    (batches written straight to the socket fill it first, so which one a reader that does not
    read during a burst gets depends on timing); either way it resumes by ``Last-Event-ID``.
    ``going_away`` when the relay stops (at once, not after uvicorn's grace period)."""
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as outside:
        async with serving(make_config(tmp_path / "r", limits=Limits(max_outbound_bytes=64 << 10))) as relay:
            async with open_stream(relay.url, "chat/fast") as slow:
                await slow.until("synced")
                await publish(relay.ws_url, "chat/fast", 50, text="x" * (16 << 10))  # batches over 64 KiB
                got: list[Any] = []
                try:
                    while (ev := await slow.next()) is not None:
                        got.append(ev)
                        if ev.event == "end":
                            assert ev.json()["reason"] == "slow_consumer" and ev.id == slow.last_id
                            assert await slow.next() is None
                            break
                except httpx.ReadError:
                    pass  # reset: the socket took no more bytes when the stream fell behind
                assert got and (got[-1].event == "end" or not any(e.event == "end" for e in got))
                seen = [r["seq"] for r in recs(got)]
                assert seen == list(range(1, len(seen) + 1)) and len(seen) < 50
            async with open_stream(relay.url, "chat/fast", last_event_id=slow.last_id) as again:  # resumes
                rest = [r["seq"] for r in recs(await again.until("synced"))]  # a backlog waits for room
            assert seen + rest == list(range(1, 51))
            bye = await outside.enter_async_context(open_stream(relay.url, "chat/fast", since=50))
            await bye.until("synced")
            t0 = loop.time()
        assert loop.time() - t0 < 3
        ended = await bye.until("end")
        assert ended[-1].json()["reason"] == "going_away"


# -- access --------------------------------------------------------------------------------------
async def test_members_feed_readers_and_a_revoke_ends_the_stream(relay: Running) -> None:
    """A ``members`` feed streams to a reader's signed request and to a read capability, not to
    anyone else; ``acl.revoke`` ends the revoked reader's stream with ``end`` unauthorized before
    the revoke record (the capability's stream goes on)."""
    feed = "chat/private"
    async with Client(relay.ws_url, key=OWNER) as c:
        for ev in (Event.create(OWNER, feed, "feed.policy", {"policy": "members"}),
                   Event.create(OWNER, feed, "acl.grant", {"key": READER.public_hex, "read": True}),
                   Event.create(OWNER, feed, "chat.msg", {"text": "hi"})):
            await c.publish_event(ev)
    rkey = relay.relay.hub.relay_key.public_hex
    path = f"/feeds/{feed}/stream"
    signed = {"authorization": authorization(READER, rkey, "GET", path, now_ms())}
    token = Capability.issue(OWNER, feed, ttl_ms=600_000).token()
    async with httpx.AsyncClient(base_url=relay.url) as http:
        r = await http.get(path)
        assert (r.status_code, r.json()["error"]) == (403, "unauthorized")
        other = Capability.issue(READER, feed).token()  # not the owner's
        r = await http.get(path, params={"token": other})
        assert (r.status_code, r.json()["error"]) == (403, "unauthorized")
    async with open_stream(relay.url, feed, headers=signed) as reader, \
            open_stream(relay.url, feed, token=token) as holder:
        assert [r["seq"] for r in recs(await reader.until("synced"))] == [1, 2, 3]
        assert [r["seq"] for r in recs(await holder.until("synced"))] == [1, 2, 3]
        async with Client(relay.ws_url, key=OWNER) as c:
            await c.publish_event(Event.create(OWNER, feed, "acl.revoke", {"key": READER.public_hex}))
            await c.publish_event(Event.create(OWNER, feed, "chat.msg", {"text": "after"}))
        ended = await reader.until("end")
        assert recs(ended) == [] and ended[-1].json()["reason"] == "unauthorized"
        assert await reader.next() is None  # the response is over
        assert [r["seq"] for r in recs(await read_recs(holder, 2))] == [4, 5]
    short = Capability.issue(OWNER, feed, ttl_ms=1500).token()
    async with open_stream(relay.url, feed, token=short, since=5) as holder:
        await holder.until("synced")
        ended = await holder.until("end", timeout=5)  # at its expiry
        assert ended[-1].json() == {"reason": "unauthorized", "message": "the capability has expired"}
    early = "chat/early"  # streamed anonymously before its owner creates it members-only
    async with open_stream(relay.url, early) as stranger:
        await stranger.until("synced")
        async with Client(relay.ws_url, key=OWNER) as c:
            await c.publish_event(Event.create(OWNER, early, "feed.policy", {"policy": "members"}))
            await c.publish_event(Event.create(OWNER, early, "chat.msg", {"text": "secret"}))
        ended = await stranger.until("end")
        assert recs(ended) == [] and ended[-1].json()["reason"] == "unauthorized"


# -- a Redis site of two processes ----------------------------------------------------------------
async def test_two_processes_of_a_redis_site(tmp_path: Path, redis_server: RedisServer) -> None:
    """Records published on one process stream from the other; a stream cut mid-backlog on one
    process resumes on the other with Last-Event-ID and misses nothing; a revoke sequenced on one
    process ends a reader's stream on the other."""
    backend = Backend("redis", redis_server.url, f"sse{os.urandom(5).hex()}")
    key = Keypair.generate()
    key_file = key.save(tmp_path / "relay.key")
    procs: list[RelayProc] = list(await asyncio.gather(*(
        start_relay_proc(tmp_path / f"p{i}", "--relay-key", str(key_file), backend=backend, site="s")
        for i in range(2))))
    a, b = procs
    ws = [p.ws_url for p in procs]
    feed = "chat/site"
    try:
        async with open_stream(b.url, feed) as watcher:  # on B before anything exists
            await watcher.until("synced")
            await publish(ws[0], feed, 30)  # sequenced on A
            live = await read_recs(watcher, 30)
        async with open_stream(b.url, feed, since=0) as s:
            first = await read_recs(s, 10)
            last = s.last_id
        async with open_stream(a.url, feed, since=0, last_event_id=last) as s:
            second = await s.until("synced")
            await publish(ws[1], feed, 5, start=30)  # published on B, streamed on A
            third = await read_recs(s, 5)
        got = recs(first) + recs(second) + recs(third)
        assert [r["seq"] for r in got] == list(range(1, 36))
        assert got == await stored(a.url, feed) == await stored(b.url, feed)
        assert recs(live) == got[:30]

        private = "chat/site-private"  # a revoke sequenced on A ends a reader's stream on B
        async with Client(ws[0], key=OWNER) as c:
            await c.publish_event(Event.create(OWNER, private, "feed.policy", {"policy": "members"}))
            await c.publish_event(Event.create(OWNER, private, "acl.grant", {"key": READER.public_hex, "read": True}))
            path = f"/feeds/{private}/stream"
            signed = {"authorization": authorization(READER, key.public_hex, "GET", path, now_ms())}
            async with open_stream(b.url, private, headers=signed) as reader:
                assert [r["seq"] for r in recs(await reader.until("synced"))] == [1, 2]
                await c.publish_event(Event.create(OWNER, private, "acl.revoke", {"key": READER.public_hex}))
                ended = await reader.until("end")
                assert recs(ended) == [] and ended[-1].json()["reason"] == "unauthorized"
    finally:
        await asyncio.gather(*(p.stop() for p in procs))


# -- a reader that stops reading --------------------------------------------------------------------
class StalledStream:
    """A raw HTTP client with a tiny receive buffer: sends the request, reads the first bytes of
    the answer, then reads nothing more."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def open(cls, url: str, feed: str, since: int) -> StalledStream:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (host, int(port)))
        request = f"GET /feeds/{feed}/stream?since={since} HTTP/1.1\r\nHost: {host}\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        head = b""
        async with asyncio.timeout(10):
            while b"event: synced" not in head:
                head += await loop.sock_recv(sock, 1024)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        return cls(sock)

    def state(self) -> int:
        return int(struct.unpack("B", self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0])

    def ended(self) -> bool:
        """The relay ended the connection (reset or FIN), whatever is still unread."""
        return self.state() in (TCP_CLOSE, TCP_CLOSE_WAIT)

    def reset(self) -> bool:
        return self.state() == TCP_CLOSE


async def test_a_stalled_reader_is_cut_and_memory_stays_bounded(tmp_path: Path) -> None:
    """Eight streams that stop reading while ~2 MB of records go out: each is cut (reset) within
    the byte cap and the unwritable deadline, a reading stream gets every record, and the relay's
    RSS comes back to within 10% of before."""
    cap, feed, n_stalled = 256 << 10, "chat/busy", 8
    proc = await start_relay_proc(tmp_path / "data", "--max-outbound-bytes", str(cap), "--unwritable-timeout", "1")
    pid = proc.proc.pid
    big = os.urandom(12 << 10).hex()  # ~24 KB per record

    async def burst(c: Client, start: int, n: int) -> None:
        for i in range(start, start + n):
            c.submit(c.create_event(feed, "chat.msg", {"text": f"{i:06d}{big}"}))
        await c.flush(60)

    try:
        async with Client(proc.ws_url, key=OWNER) as pub, open_stream(proc.url, feed) as bystander:
            await bystander.until("synced")
            reading = asyncio.ensure_future(read_recs(bystander, 80))  # it keeps up: never cut
            for k in range(4):  # warm-up, the same traffic with the bystander alone: what the relay keeps anyway
                await burst(pub, 20 * k, 20)
            assert [r["seq"] for r in recs(await asyncio.wait_for(reading, 30))] == list(range(1, 81))
            before = rss_kib(pid)
            stalled = [await StalledStream.open(proc.url, feed, 80) for _ in range(n_stalled)]
            got: list[SseEvent] = []
            reading = asyncio.ensure_future(read_recs(bystander, 80))
            peak = before
            for k in range(4, 8):
                await burst(pub, 20 * k, 20)
                peak = max(peak, rss_kib(pid))
            await eventually(lambda: all(s.ended() for s in stalled), 10, "every stalled stream cut")
            resets = sum(s.reset() for s in stalled)
            got = await asyncio.wait_for(reading, 30)
            assert [r["seq"] for r in recs(got)] == list(range(81, 161))
            for s in stalled:
                s.sock.close()
            async with httpx.AsyncClient(base_url=proc.url) as http:
                await eventually(lambda: _connections(http, 2), 10, "only the publisher and the bystander left")
            await eventually(lambda: rss_kib(pid) <= before * 1.10, 10, f"RSS back within 10% of {before} KiB")
            print(f"\nstalled SSE readers: {n_stalled}, {resets} reset; RSS before {before} KiB, peak {peak} KiB, "
                  f"after {rss_kib(pid)} KiB")
    finally:
        await proc.stop()


async def _connections(http: httpx.AsyncClient, n: int) -> bool:
    return bool((await http.get("/health")).json()["connections"] == n)
