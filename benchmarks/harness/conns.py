"""Many lean agent connections in one client process (``bench_conns.py``).

Each connection is a plain ``asyncio.Protocol`` that does the WebSocket handshake and framing
itself (RFC 6455, client side): no task per connection and little CPU per message, so one
process holds thousands of them and timestamps deliveries without falling behind the relay. A
connection does what every agent does: it answers the relay's ``challenge`` with a ``hello``
signed by its own Ed25519 key (``collab.events.hello_bytes``), then subscribes to its own feed
(``note/own-<i>``) and to the shared feed, and counts as connected once both ``synced`` frames
arrived. Afterwards it records, for every ``rec`` of the shared feed, its ``seq`` and the
receive time (``time.monotonic_ns``, system-wide, so comparable with the publisher's send
time), and checks that the shared feed's records arrive in order with no gap.

The process is driven over a ``multiprocessing`` pipe by the benchmark: ``connect`` (indices),
then ``report`` (per shared-feed seq: how many connections got it and the last receive time;
plus order errors), then ``close``.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import time
from typing import Any

SHARED_FEED = "note/shared"
_SHARED_REC = b'{"t":"rec","feed":"' + SHARED_FEED.encode() + b'"'
_SYNCED = b'{"t":"synced"'
_PRESENCE = b'{"t":"presence"'


def own_feed(i: int) -> str:
    return f"note/own-{i}"


def raise_nofile() -> int:
    """Lift this process's open-file limit to its hard limit (10,000 sockets need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Stats:
    """What one client process observed of the shared feed, over all its connections."""

    def __init__(self) -> None:
        self.count: dict[int, int] = {}   # seq -> connections that received it
        self.last: dict[int, int] = {}    # seq -> latest receive time (ns) over those connections
        self.errors: list[str] = []

    def got(self, seq: int, t: int) -> None:
        self.count[seq] = self.count.get(seq, 0) + 1
        if t > self.last.get(seq, 0):
            self.last[seq] = t


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if not n:
        return head + mask
    m = (mask * (n // 4 + 1))[:n]
    return head + mask + (int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


class AgentConn(asyncio.Protocol):
    """One agent connection (see the module docstring). The WebSocket handshake and framing are
    done here, minimally (server frames are unmasked and unfragmented; pings are answered),
    so that the client processes spend little CPU per delivery next to the relay."""

    __slots__ = ("buf", "closing", "done", "failed", "host", "i", "key", "last_seq", "open", "path", "stats",
                 "synced", "transport")

    def __init__(self, i: int, host: str, path: str, key: Any, stats: Stats, done: asyncio.Future[None]) -> None:
        self.i, self.host, self.path, self.key, self.stats, self.done = i, host, path, key, stats, done
        self.transport: Any = None
        self.buf = bytearray()
        self.open = False
        self.synced = 0
        self.last_seq = 0   # the last shared-feed seq received (records arrive in order)
        self.failed = False
        self.closing = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                         ).encode())

    def data_received(self, data: bytes) -> None:
        t = time.monotonic_ns()
        buf = self.buf
        buf += data
        pos = 0
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._fail(f"connection {self.i}: handshake refused: {bytes(buf[:200])!r}")
                self.transport.close()
                return
            self.open = True
            pos = end + 4
        size = len(buf)
        while size - pos >= 2:
            b0, n = buf[pos], buf[pos + 1] & 0x7F
            h = 2
            if n == 126:
                if size - pos < 4:
                    break
                n, h = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, h = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if size - pos < h + n:
                break
            start, pos = pos + h, pos + h + n
            op = b0 & 0x0F
            if op in (1, 2):
                if buf.startswith(_PRESENCE, start) and buf.find(b"\n", start, pos) < 0:
                    continue  # a message of one presence frame (up to 670 KB at 10,000 agents): not copied
                self._message(bytes(buf[start:pos]), t)
                continue
            payload = bytes(buf[start:pos])
            if op == 9:  # ping: pong with the same payload
                self.transport.write(client_frame(payload, 0xA))
            elif op == 8 and not self.closing:  # the relay closes: answer, then the socket goes
                self.closing = True
                self.stats.errors.append(f"connection {self.i} closed by the relay: {payload[:100]!r}")
                self.transport.write(client_frame(payload[:2], 0x8))
                self.transport.close()
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self._fail(f"connection {self.i} lost before it synced: {exc!r}")
        elif not self.failed and not self.closing:
            self.stats.errors.append(f"connection {self.i} lost: {exc!r}")

    # -- the agent -------------------------------------------------------------------------
    def _fail(self, why: str) -> None:
        self.failed = True
        self.stats.errors.append(why)
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))

    def _send(self, text: str) -> None:
        self.transport.write(client_frame(text.encode()))

    def _message(self, msg: bytes, t: int) -> None:
        for part in msg.split(b"\n"):
            if part.startswith(_SHARED_REC):
                j = part.find(b'"seq":')
                seq = int(part[j + 6:part.index(b",", j)])
                if seq != self.last_seq + 1 and self.last_seq:
                    self.stats.errors.append(f"connection {self.i}: shared seq {seq} after {self.last_seq}")
                self.last_seq = seq
                self.stats.got(seq, t)
            elif part.startswith(_SYNCED):
                self.synced += 1
                if self.synced == 2 and not self.done.done():
                    self.done.set_result(None)
            elif part.startswith(b'{"t":"challenge"'):
                self._hello(json.loads(part))
            elif part.startswith((b'{"t":"error"', b'{"t":"unsubbed"')):
                self._fail(f"connection {self.i}: {part[:300].decode('utf-8', 'replace')}")

    def _hello(self, ch: dict[str, Any]) -> None:
        from collab.events import hello_bytes

        key = self.key
        pub = key.public_hex
        sig = key.sign(hello_bytes(pub, ch["nonce"], ch["relay"])).hex()
        self._send("\n".join((  # one message: the relay handles a batch's frames in order
            json.dumps({"t": "hello", "key": pub, "sig": sig}),
            json.dumps({"t": "sub", "feed": own_feed(self.i), "since": 0}),
            json.dumps({"t": "sub", "feed": SHARED_FEED, "since": 0}))))

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


async def _connect_all(host: str, port: int, indices: list[int], parallel: int,
                       stats: Stats) -> tuple[list[AgentConn], list[float]]:
    from collab.keys import Keypair

    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(parallel)
    conns: list[AgentConn] = []
    took: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            done: asyncio.Future[None] = loop.create_future()
            key = Keypair.generate()
            _, conn = await loop.create_connection(
                lambda: AgentConn(i, f"{host}:{port}", "/ws", key, stats, done), host, port)
            conns.append(conn)
            await asyncio.wait_for(done, 120)
            took.append(time.perf_counter() - t0)

    await asyncio.gather(*(one(i) for i in indices))
    return conns, took


def client_proc(pipe: Any, host: str, port: int, indices: list[int], parallel: int) -> None:
    """A client process: connect ``indices``, then answer the benchmark's requests."""
    raise_nofile()
    try:
        import uvloop

        uvloop.run(_main(pipe, host, port, indices, parallel))
    except ImportError:  # pragma: no cover
        asyncio.run(_main(pipe, host, port, indices, parallel))


async def _main(pipe: Any, host: str, port: int, indices: list[int], parallel: int) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    try:
        conns, took = await _connect_all(host, port, indices, parallel, stats)
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the benchmark, which fails the run
        pipe.send(("error", f"{exc!r}; {stats.errors[:3]}"))
        return
    pipe.send(("connected", len(conns), took))
    while True:
        msg = await loop.run_in_executor(None, pipe.recv)
        if msg[0] == "report":
            pipe.send(("report", stats.count, stats.last, stats.errors[:20], len(stats.errors),
                       sum(1 for c in conns if c.transport is not None and c.transport.is_closing())))
        elif msg[0] == "close":
            for c in conns:
                c.close()
            pipe.send(("closed", os.getpid()))
            return
