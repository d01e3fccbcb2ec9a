"""Load generators for Colony's HTTP doors (``bench_http.py``): a subscriber reading
``GET /feeds/{feed}/stream`` (Server-Sent Events) and a writer publishing with
``POST /feeds/{feed}/events``. They keep the bookkeeping of their WebSocket twins in
``load.py`` (markers = event ids, receive and ack times), so ``run_workload`` measures both the
same way.
"""
from __future__ import annotations

import asyncio
import contextlib
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
    ``c.synced``. Parsed from raw bytes, like the WebSocket subscriber (no JSON decoding)."""
    import httpx

    client = httpx.AsyncClient(base_url=_http_base(url), timeout=httpx.Timeout(30.0, read=None))
    c.ws = _Closer(client.aclose)
    marks, times = c.marks, c.times
    try:
        async with client.stream("GET", f"/feeds/{c.feed}/stream", params={"since": 0}) as resp:
            if resp.status_code != 200:
                c.errors.append(f"stream refused: {resp.status_code} {(await resp.aread())[:200]!r}")
                return
            event = b""
            buf = b""
            async for chunk in resp.aiter_raw():
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
                        elif event in (b"error", b"end"):
                            c.errors.append(line[:300].decode("utf-8", "replace"))
                    elif line.startswith(b"event:"):
                        event = line[6:].strip()
                    elif not line:
                        event = b""
    except (httpx.ReadError, httpx.RemoteProtocolError, httpx.StreamClosed):
        pass  # the end of the run (the harness closes the client), or the server cut the stream
    except Exception as exc:
        c.errors.append(f"subscriber failed: {exc!r}")
        raise


class HttpWriter(Writer):
    """A writer that publishes each event with its own ``POST`` (at most ``window`` in flight:
    the harness's window, on a keep-alive connection pool of that size)."""

    def __init__(self, idx: int, url: str, compression: str | None, feed: str) -> None:
        super().__init__(idx, url, compression, feed)
        self.client: Any = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def open_colony(self) -> None:
        import httpx

        from collab.keys import Keypair

        self.kp = Keypair.generate()
        self.client = httpx.AsyncClient(base_url=_http_base(self.url), timeout=30.0,
                                        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        self.ws = _Closer(self._close)
        await self.client.get("/health")  # open one keep-alive connection before the load starts

    async def _close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await self.client.aclose()

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
            resp = await self.client.post(f"/feeds/{self.feed}/events", content=body,
                                          headers={"content-type": "application/json"})
        except Exception as exc:  # noqa: BLE001 - a failed POST is a refused publish in the result
            self.errors.append(f"POST failed: {exc!r}")
            self._refuse(m, now_ns())
            return
        t = now_ns()
        self.messages_in += 1
        if resp.status_code == 200:
            self._ack(m, t)
        else:
            self.errors.append(f"{resp.status_code} {resp.text[:200]}")
            self._refuse(m, t)
