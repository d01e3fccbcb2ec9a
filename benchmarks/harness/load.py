"""The load generators: subscriber and writer processes (forked, one uvloop event loop each)
that publish Yjs updates and time every delivery by its marker.
"""
from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from websockets.exceptions import ConnectionClosed

from . import yframe
from .common import COLONY, COLONY_HTTP, FEED, MARK_RE, NS, PEER, Scenario, doc_feed, doc_of, now_ns

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# load generators (run in forked processes, each with its own event loop)
# ---------------------------------------------------------------------------------------
def _run_loop(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def _connect(url: str, compression: str | None) -> Any:
    from websockets.asyncio.client import connect

    return connect(url, compression=compression, max_size=None, ping_interval=None, proxy=None,
                   open_timeout=30, close_timeout=2)


async def _recv_ctrl(conn: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


class SubClient:
    """One subscriber connection; records (marker, monotonic receive time) per update."""

    __slots__ = ("closed_code", "errors", "feed", "frames", "idx", "marks", "messages", "synced", "times", "ws")

    def __init__(self, idx: int, feed: str = FEED) -> None:
        self.idx = idx
        self.feed = feed
        self.marks: list[bytes] = []
        self.times: list[int] = []
        self.messages = 0
        self.frames = 0
        self.errors: list[str] = []
        self.ws: Any = None
        self.synced = asyncio.Event()
        self.closed_code: int | None = None

    async def run_colony(self, url: str, compression: str | None) -> None:
        from collab.events import hello_bytes
        from collab.keys import Keypair

        kp = Keypair.generate()
        async with _connect(url, compression) as ws:
            self.ws = ws
            ch = json.loads((await ws.recv()).split("\n")[0])
            sig = kp.sign(hello_bytes(kp.public_hex, ch["nonce"], ch["relay"])).hex()
            await ws.send(json.dumps({"t": "hello", "key": kp.public_hex, "sig": sig}))
            await ws.send(json.dumps({"t": "sub", "feed": self.feed, "since": 0}))
            marks, times = self.marks, self.times
            recv = ws.recv
            try:
                while True:
                    msg = await recv(decode=False)
                    t = now_ns()
                    self.messages += 1
                    parts = msg.split(b"\n") if b"\n" in msg else (msg,)
                    for part in parts:
                        self.frames += 1
                        if part.startswith(b'{"t":"rec"'):
                            i = part.rfind(b'"id":"')
                            marks.append(part[i + 6:i + 70])
                            times.append(t)
                        elif part.startswith(b'{"t":"synced"'):
                            self.synced.set()
                        elif part.startswith((b'{"t":"error"', b'{"t":"unsubbed"')):
                            self.errors.append(part[:300].decode("utf-8", "replace"))
            except ConnectionClosed as exc:
                self._closed(exc)
            except Exception as exc:
                self.errors.append(f"subscriber failed: {exc!r}")  # in the result; the task fails with it
                raise

    async def run_peer(self, url: str, compression: str | None, addr: bytes = b"") -> None:
        """A y-protocol client; ``addr``: Hocuspocus's framing (:mod:`.yframe`), else plain y-websocket."""
        from pycrdt import Doc, create_sync_message, handle_sync_message

        doc = Doc()
        p, sync = len(addr), yframe.SYNC_TYPES
        async with _connect(url, compression) as ws:
            self.ws = ws
            for m in yframe.opening(addr):
                await ws.send(m)
            await ws.send(addr + create_sync_message(doc))  # our step 1: the server answers with step 2
            marks, times, find = self.marks, self.times, MARK_RE.findall
            recv = ws.recv
            try:
                while True:
                    msg = await recv(decode=False)
                    t = now_ns()
                    self.messages += 1
                    self.frames += 1
                    if msg[p] not in sync:
                        continue  # awareness, auth, Hocuspocus's sync status
                    step = msg[p + 1]
                    if step == 2:  # sync update: the hot path
                        for m in find(msg):
                            marks.append(m)
                            times.append(t)
                    elif step == 0:  # server's step 1: answer like a y-websocket client
                        reply = handle_sync_message(msg[p + 1:], doc)
                        if reply is not None:
                            await ws.send(addr + reply)
                    elif step == 1:  # step 2: we have the document
                        for m in find(msg):
                            marks.append(m)
                            times.append(t)
                        self.synced.set()
            except ConnectionClosed as exc:
                self._closed(exc)
            except Exception as exc:
                self.errors.append(f"subscriber failed: {exc!r}")  # in the result; the task fails with it
                raise

    def _closed(self, exc: ConnectionClosed) -> None:
        """The connection ended: the close code the server sent (None if it sent none) is part of the result."""
        self.closed_code = exc.rcvd.code if exc.rcvd is not None else None


def _pick(url: str | list[str], idx: int) -> str:
    """Client ``idx``'s server: one URL, or a list that clients are spread over round-robin."""
    return url if isinstance(url, str) else url[idx % len(url)]


def subscriber_proc(conn: Any, system: str, url: str | list[str], indices: list[int], compression: str | None,
                    prime: bool, room_ready: Any, docs: int = 1, feed: str = FEED) -> None:
    if system == PEER and not prime:
        room_ready.wait(60)
    _run_loop(_subscriber_main(conn, system, url, indices, compression, prime, room_ready, docs, feed))


async def _subscriber_main(conn: Any, system: str, url: str | list[str], indices: list[int], compression: str | None,
                           prime: bool, room_ready: Any, docs: int = 1, feed: str = FEED) -> None:
    from .load_http import run_sse

    clients = [SubClient(i, doc_feed(i, docs, feed)) for i in indices]
    tasks: list[asyncio.Task[None]] = []

    def launch(c: SubClient) -> asyncio.Task[None]:
        u = _pick(url, c.idx)
        if system == COLONY_HTTP:
            coro = run_sse(c, u)
        else:
            coro = (c.run_colony(u, compression) if system == COLONY
                    else c.run_peer(u, compression, yframe.address(system, u)))
        t = asyncio.get_running_loop().create_task(coro)
        tasks.append(t)
        return t

    async def until_synced(c: SubClient, t: asyncio.Task[None]) -> None:
        w = asyncio.ensure_future(c.synced.wait())
        await asyncio.wait([w, t], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not c.synced.is_set():
            w.cancel()
            if t.done() and t.exception() is not None:
                raise RuntimeError(f"subscriber {c.idx} failed: {t.exception()!r}")
            raise RuntimeError(f"subscriber {c.idx} never synced")

    try:
        rest = clients
        if prime:  # pycrdt-websocket serves only the first of several clients creating a room at once
            await until_synced(clients[0], launch(clients[0]))
            room_ready.set()
            rest = clients[1:]
        sem = asyncio.Semaphore(16)

        async def join(c: SubClient) -> None:
            async with sem:
                await until_synced(c, launch(c))

        await asyncio.gather(*(join(c) for c in rest))
    except Exception as exc:
        log.exception("subscribers %s failed to connect", indices)
        conn.send(("error", repr(exc)))  # the parent reports the run as failed
        return
    conn.send(("ready", len(clients)))
    msg = await _recv_ctrl(conn)
    if msg[0] != "finish":
        return
    # expected_by_doc: doc -> the markers published (and not refused) to that doc's feed; every
    # subscriber must receive exactly those of its own doc, once each, and nothing else
    _, expected_by_doc, send_times, t0, t1, drain_s = msg
    exp_sets = {d: set(v) for d, v in expected_by_doc.items()}
    empty: set[bytes] = set()

    def expected_of(c: SubClient) -> set[bytes]:
        return exp_sets.get(doc_of(c.idx, docs), empty)

    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        if all(len(c.marks) >= len(expected_of(c)) for c in clients) and \
                all(expected_of(c) <= set(c.marks) for c in clients):
            break
        await asyncio.sleep(0.05)
    lat = array.array("q")
    sent_at = array.array("q")
    per_client = []
    in_window = 0
    for c in clients:
        got = set(c.marks)
        expected = expected_of(c)
        mine = 0
        for m, t in zip(c.marks, c.times, strict=True):
            if t0 <= t < t1:
                mine += 1
            ts = send_times.get(m)
            if ts is not None and t0 <= ts < t1:
                lat.append(t - ts)
                sent_at.append(ts - t0)
        per_client.append({
            "idx": c.idx, "doc": doc_of(c.idx, docs), "expected": len(expected), "received": len(c.marks),
            "missing": len(expected - got), "in_window": mine,
            "duplicates": len(c.marks) - len(got), "unexpected": len(got - expected),
            "messages": c.messages, "frames": c.frames, "errors": c.errors[:3], "closed_code": c.closed_code,
        })
        in_window += mine
    conn.send(("result", {"clients": per_client, "latencies": lat.tobytes(), "sent_at": sent_at.tobytes(),
                          "in_window": in_window}))
    await _recv_ctrl(conn)  # "close"
    for c in clients:
        if c.ws is not None:
            with contextlib.suppress(TimeoutError):  # close() is idempotent and absorbs ConnectionClosed
                await asyncio.wait_for(c.ws.close(), 2)
    for t in tasks:
        t.cancel()
    conn.send(("closed",))


class Writer:
    """One writer connection: its own pycrdt Doc, inserts at the end of "text"."""

    def __init__(self, idx: int, url: str, compression: str | None, feed: str = FEED) -> None:
        from pycrdt import Doc, Text

        self.idx, self.url, self.compression, self.feed = idx, url, compression, feed
        self.doc = Doc()
        self.text = self.doc.get("text", type=Text)
        self._updates: list[bytes] = []
        self.doc.observe(lambda ev: self._updates.append(ev.update))
        self.n = 0
        self.sent: dict[bytes, int] = {}
        self.acked: dict[bytes, int] = {}
        self.refused: dict[bytes, int] = {}  # publishes the relay answered with an error (never stored)
        self.errors: list[str] = []
        self.messages_in = 0
        self.inflight = 0
        self.room = asyncio.Event()
        self.room.set()
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.kp: Any = None
        self.prefix = b"w%02dn" % idx
        self.addr = b""  # Hocuspocus's framing (:mod:`.yframe`), else plain y-websocket

    def next_update(self) -> tuple[bytes, bytes]:
        marker = b"w%02dn%08d;" % (self.idx, self.n)
        self.n += 1
        self.text += marker.decode()
        return marker, self._updates.pop()

    def _ack(self, m: bytes, t: int) -> None:
        if m in self.sent and m not in self.acked and m not in self.refused:
            self.acked[m] = t
            self.inflight -= 1
            self.room.set()

    def _refuse(self, m: bytes, t: int) -> None:
        if m in self.sent and m not in self.acked and m not in self.refused:
            self.refused[m] = t
            self.inflight -= 1
            self.room.set()

    # -- Colony ----------------------------------------------------------------------------
    async def open_colony(self) -> None:
        from collab.events import hello_bytes
        from collab.keys import Keypair

        self.kp = Keypair.generate()
        self.ws = ws = await _connect(self.url, self.compression)
        ch = json.loads((await ws.recv()).split("\n")[0])
        sig = self.kp.sign(hello_bytes(self.kp.public_hex, ch["nonce"], ch["relay"])).hex()
        await ws.send(json.dumps({"t": "hello", "key": self.kp.public_hex, "sig": sig}))
        while True:
            frame = json.loads((await ws.recv()).split("\n")[0])
            if frame["t"] == "welcome":
                break
            if frame["t"] == "error":
                raise RuntimeError(f"hello refused: {frame}")
        self.reader = asyncio.get_running_loop().create_task(self._read_colony())

    async def _read_colony(self) -> None:
        try:
            while True:
                msg = await self.ws.recv(decode=False)
                t = now_ns()
                self.messages_in += 1
                for part in msg.split(b"\n"):
                    if part.startswith(b'{"t":"ok"'):
                        i = part.find(b'"id":"')
                        self._ack(part[i + 6:i + 70], t)
                    elif part.startswith(b'{"t":"error"'):
                        self.errors.append(part[:300].decode("utf-8", "replace"))
                        i = part.find(b'"id":"')
                        if i >= 0:  # a refused publish: it frees its slot in the window
                            self._refuse(part[i + 6:i + 70], t)
        except ConnectionClosed:
            pass  # the end of the run, or the server went away: unacked publishes are reported as such
        except Exception as exc:
            self.errors.append(f"writer's reader failed: {exc!r}")  # in the result; the task fails with it
            raise

    def next_event(self) -> Any:
        """The next signed event: a Yjs update on a ``doc/`` feed, else a generic ``bench.note``."""
        from collab.events import Event, b64

        if self.feed.startswith("doc/"):
            _, update = self.next_update()
            return Event.create(self.kp, self.feed, "doc.update", {"update": b64(update)})
        marker = b"w%02dn%08d;" % (self.idx, self.n)
        self.n += 1
        return Event.create(self.kp, self.feed, "bench.note", {"m": marker.decode()})

    async def publish_colony(self) -> None:
        from collab import frames

        ev = self.next_event()
        data = frames.encode({"t": "pub", "event": ev.to_wire()})
        m = ev.id.encode()
        self.inflight += 1
        self.sent[m] = now_ns()
        await self.ws.send(data)

    # -- pycrdt-websocket ------------------------------------------------------------------
    async def open_peer(self) -> None:
        from pycrdt import create_sync_message, handle_sync_message

        self.ws = ws = await _connect(self.url, self.compression)
        addr, p = self.addr, len(self.addr)
        for m in yframe.opening(addr):
            await ws.send(m)
        await ws.send(addr + create_sync_message(self.doc))
        while True:
            msg = await ws.recv(decode=False)
            if msg[p] not in yframe.SYNC_TYPES:
                continue
            if msg[p + 1] == 0:
                reply = handle_sync_message(msg[p + 1:], self.doc)
                if reply is not None:
                    await ws.send(addr + reply)
            elif msg[p + 1] == 1:
                handle_sync_message(msg[p + 1:], self.doc)  # whatever the room already holds
                break
        self._updates.clear()
        self.reader = asyncio.get_running_loop().create_task(self._read_peer())

    async def _read_peer(self) -> None:
        prefix, find = self.prefix, MARK_RE.findall
        try:
            while True:
                msg = await self.ws.recv(decode=False)
                t = now_ns()
                self.messages_in += 1
                if prefix in msg:  # our own update, echoed by the room: that is the "ack"
                    for m in find(msg):
                        if m.startswith(prefix):
                            self._ack(m, t)
        except ConnectionClosed:
            pass  # the end of the run, or the server went away: unacked publishes are reported as such
        except Exception as exc:
            self.errors.append(f"writer's reader failed: {exc!r}")  # in the result; the task fails with it
            raise

    async def publish_peer(self) -> None:
        from pycrdt import create_update_message

        marker, update = self.next_update()
        data = self.addr + create_update_message(update)
        self.inflight += 1
        self.sent[marker] = now_ns()
        await self.ws.send(data)


def writer_proc(conn: Any, system: str, url: str | list[str], n: int, sc: Scenario, compression: str | None) -> None:
    _run_loop(_writer_main(conn, system, url, n, sc, compression))


async def _writer_main(conn: Any, system: str, url: str | list[str], n: int, sc: Scenario,
                       compression: str | None) -> None:
    from .load_http import HttpWriter

    cls = HttpWriter if system == COLONY_HTTP else Writer
    writers = [cls(i, _pick(url, i), compression, doc_feed(i, sc.docs, sc.feed)) for i in range(n)]
    for w in writers:
        w.addr = yframe.address(system, w.url)
    try:
        await asyncio.gather(*(w.open_colony() if system in (COLONY, COLONY_HTTP) else w.open_peer()
                               for w in writers))
    except Exception as exc:
        log.exception("writers failed to connect")
        conn.send(("error", repr(exc)))  # the parent reports the run as failed
        return
    conn.send(("ready", n))
    msg = await _recv_ctrl(conn)
    if msg[0] != "go":
        return
    _, t_start, t_end = msg

    async def sleep_until(t: int) -> None:
        d = (t - now_ns()) / NS
        if d > 0:
            await asyncio.sleep(d)

    async def room_for_one(w: Writer) -> bool:
        """Wait until ``w`` may send (fewer than ``window`` in flight); False once the load ends."""
        while w.inflight >= sc.window:
            w.room.clear()
            left = (t_end - now_ns()) / NS
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(w.room.wait(), left)
            except TimeoutError:
                return False
        return True

    async def run(w: Writer) -> None:
        publish = w.publish_colony if system in (COLONY, COLONY_HTTP) else w.publish_peer
        if sc.rate is not None:
            interval = int(NS / sc.rate)
            nxt = t_start + (w.idx * interval) // max(1, n)  # spread writers over the interval
            while nxt < t_end:
                await sleep_until(nxt)
                if not await room_for_one(w):  # safety valve only; never reached at the target rate
                    break
                await publish()
                nxt += interval
                now = now_ns()
                if now - nxt > interval:  # fell behind by more than one tick: don't burst to catch up
                    nxt = now
        else:
            await sleep_until(t_start)
            while now_ns() < t_end:
                if not await room_for_one(w):
                    break
                await publish()

    async def answered(w: Writer) -> None:
        """Until every publish of ``w`` is acked or refused (each answer sets ``room``)."""
        while w.inflight > 0:
            w.room.clear()
            await w.room.wait()

    await asyncio.gather(*(run(w) for w in writers))
    with contextlib.suppress(TimeoutError):  # what is still unanswered by then is reported as unacked
        await asyncio.wait_for(asyncio.gather(*(answered(w) for w in writers)), 20)
    sent: dict[bytes, int] = {}
    acked: dict[bytes, int] = {}
    refused: dict[bytes, int] = {}
    errors: list[str] = []
    by_doc: dict[int, list[bytes]] = {}  # doc -> markers its writers published
    for w in writers:
        by_doc.setdefault(doc_of(w.idx, sc.docs), []).extend(w.sent)
        sent.update(w.sent)
        acked.update(w.acked)
        refused.update(w.refused)
        errors.extend(w.errors[:5])
    conn.send(("result", {
        "sent": sent, "acked": acked, "refused": refused, "errors": errors, "by_doc": by_doc,
        "messages_in": sum(w.messages_in for w in writers),
    }))
    await _recv_ctrl(conn)  # "close"
    for w in writers:
        with contextlib.suppress(TimeoutError):  # close() is idempotent and absorbs ConnectionClosed
            await asyncio.wait_for(w.ws.close(), 2)
        if w.reader is not None:
            w.reader.cancel()
    conn.send(("closed",))
