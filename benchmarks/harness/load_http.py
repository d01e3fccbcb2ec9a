"""Load generators for Colony's HTTP doors (``bench_http.py``): a subscriber reading
``GET /feeds/{feed}/stream`` (Server-Sent Events) and a writer publishing with
``POST /feeds/{feed}/events``. They keep the bookkeeping of their WebSocket twins in
``load.py`` (markers = event ids, receive and ack times), so ``run_workload`` measures both the
same way.
"""
from __future__ import annotations

import asyncio
from typing import Any

from .common import now_ns
from .load import SubClient, Writer


def _http_base(url: str) -> str:
    """``ws://host:port/ws`` (what the harness hands out) -> ``http://host:port``."""
    base = url.split("/ws", 1)[0] if url.startswith("ws") else url.rstrip("/")
    return "http" + base[2:] if base.startswith("ws") else base


class _Closer:
    """What the harness closes at the end of a run (it calls ``ws.close()``)."""

    def __init__(self, close: Any) -> None:
        self._close = close

    async def close(self) -> None:
        await self._close()


async def run_sse(c: SubClient, url: str) -> None:
    """Subscriber ``c`` over SSE: every ``rec`` event's marker (the event id: the last ``"id":"``
    of the record, whose ``event`` member holds it) and its receive time; ``synced`` sets
    ``c.synced``. HTTP/1.1 by hand and parsed from raw bytes, like the WebSocket subscriber (no
    JSON decoding; an HTTP client library would make the load generator, not the relay, set the
    latency). The chunked framing's size lines are skipped: the relay sends whole events per chunk."""
    hostport = _http_base(url).split("://", 1)[1]
    host, port = hostport.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    c.ws = _Closer(_closer(writer))
    writer.write(f"GET /feeds/{c.feed}/stream?since=0 HTTP/1.1\r\nHost: {hostport}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    status = await reader.readuntil(b"\r\n")
    if b" 200 " not in status:
        c.errors.append(f"stream refused: {status!r}")
        return
    await reader.readuntil(b"\r\n\r\n")  # the headers
    marks, times = c.marks, c.times
    event = b""
    buf = b""
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            t = now_ns()
            c.messages += 1
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.startswith(b"data:"):
                    if event == b"rec":
                        c.frames += 1
                        i = line.rfind(b'"id":"')
                        marks.append(line[i + 6:i + 70])
                        times.append(t)
                    elif event == b"synced":
                        c.frames += 1
                        c.synced.set()
                    elif event == b"end":
                        c.errors.append(line[:300].decode("utf-8", "replace"))
                elif line.startswith(b"event:"):
                    event = line[6:].strip()
                elif not line or line.endswith(b"\r"):  # a blank line, or the chunked framing
                    event = b"" if not line else event
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the end of the run, or the server cut the stream
    except Exception as exc:
        c.errors.append(f"subscriber failed: {exc!r}")
        raise


def _closer(writer: asyncio.StreamWriter) -> Any:
    async def close() -> None:
        writer.close()
    return close


class _Conn:
    """One keep-alive HTTP/1.1 connection, by hand: a request is a few bytes out and a status line,
    headers and a ``Content-Length`` body in. httpx costs the load generator ~10x more CPU per
    request, enough to make the writers, not the relay, the bottleneck at a few hundred events/s."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.writer.write(head + b"%d\r\n\r\n" % len(body) + body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)


class HttpWriter(Writer):
    """A writer that publishes each event with its own ``POST`` (at most ``window`` in flight,
    each on a keep-alive connection of its own, opened on first need and reused)."""

    def __init__(self, idx: int, url: str, compression: str | None, feed: str) -> None:
        super().__init__(idx, url, compression, feed)
        self.idle: list[_Conn] = []
        self.conns: list[_Conn] = []
        self.tasks: set[asyncio.Task[None]] = set()
        base = _http_base(url)
        hostport = base.split("://", 1)[1]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.head = (f"POST /feeds/{feed}/events HTTP/1.1\r\nHost: {hostport}\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()

    async def _conn(self) -> _Conn:
        if self.idle:
            return self.idle.pop()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        conn = _Conn(reader, writer)
        self.conns.append(conn)
        return conn

    async def open_colony(self) -> None:
        from collab.keys import Keypair

        self.kp = Keypair.generate()
        self.idle.append(await self._conn())  # one connection before the load starts
        self.ws = _Closer(self._close)

    async def _close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        for c in self.conns:
            c.writer.close()

    async def publish_colony(self) -> None:
        from collab.canonical import canonical

        ev = self.next_event()
        body = canonical(ev.to_wire())
        m = ev.id.encode()
        self.inflight += 1
        self.sent[m] = now_ns()
        task = asyncio.get_running_loop().create_task(self._post(m, body))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _post(self, m: bytes, body: bytes) -> None:
        try:
            conn = await self._conn()
            status, answer = await conn.post(self.head, body)
        except Exception as exc:  # noqa: BLE001 - a failed POST is a refused publish in the result
            self.errors.append(f"POST failed: {exc!r}")
            self._refuse(m, now_ns())
            return
        t = now_ns()
        self.idle.append(conn)
        self.messages_in += 1
        if status == 200:
            self._ack(m, t)
        else:
            self.errors.append(f"{status} {answer[:200]!r}")
            self._refuse(m, t)
