"""``GET /watch?prefix=P``: one watch (relay.core.watch) as a Server-Sent Events stream
(docs/protocol.md 15.5).

The request is checked before anything is sent (prefix, signed-read header, the per-address
connection bound shared with the WebSockets); the stream then starts with a comment line, so a
client knows the watch is on once it reads the first bytes, and carries ``event: announce``
events and keep-alive comments until the client goes away, the relay shuts down, or the
client reads too slowly (its queue passes ``max_outbound_frames`` / ``max_outbound_bytes``:
the stream ends and the client watches again; announcements are not replayed).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from collab.errors import ColonyError
from collab.events import check_prefix

from relay.endpoints.http import _error, auth_refused, reader

if TYPE_CHECKING:
    from relay.server import Relay

KEEPALIVE = 15.0  # seconds between keep-alive comments on an idle stream
TICK = 0.5        # how often an idle stream checks whether the relay is shutting down


class SseWatcher:
    """One ``/watch`` stream's watcher: announcements queue here until the stream writes them."""

    def __init__(self, key: str | None, max_frames: int, max_bytes: int) -> None:
        self.key = key
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self.queue: deque[str] = deque()
        self.bytes = 0
        self.overflow = False
        self.wake = asyncio.Event()

    def announce(self, body: str) -> None:
        if self.overflow:
            return
        if len(self.queue) >= self.max_frames or self.bytes + len(body) > self.max_bytes:
            self.overflow = True  # too slow: the stream ends
        else:
            self.queue.append(body)
            self.bytes += len(body)
        self.wake.set()


class WatchStream(Response):
    """The streaming answer; whatever ends it, the watch and the address's slot are released."""

    def __init__(self, relay: Relay, watcher: SseWatcher, prefix: str, ip: str) -> None:
        super().__init__(media_type="text/event-stream")
        self.relay, self.watcher, self.prefix, self.ip = relay, watcher, prefix, ip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay, w = self.relay, self.watcher
        watches = relay.hub.watches
        gone = asyncio.Event()

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            w.wake.set()

        listener = asyncio.get_running_loop().create_task(listen())
        try:
            await watches.add(w, self.prefix, relay.config.limits.max_watches)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]})
            await send({"type": "http.response.body", "body": b": watching\n\n", "more_body": True})
            idle = 0.0
            while not gone.is_set() and not relay.closing and not w.overflow:
                if not w.queue:
                    try:
                        await asyncio.wait_for(w.wake.wait(), TICK)
                    except TimeoutError:
                        idle += TICK
                        if idle >= KEEPALIVE:
                            idle = 0.0
                            await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                        continue
                w.wake.clear()
                if gone.is_set() or w.overflow:
                    break
                items, w.queue, w.bytes = w.queue, deque(), 0
                idle = 0.0
                body = "".join(f"event: announce\ndata: {b}\n\n" for b in items).encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        finally:
            watches.remove_all(w)
            relay.release(self.ip)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


async def watch(request: Request) -> Response:
    relay: Relay = request.app.state.relay
    limits = relay.config.limits
    prefix = request.query_params.get("prefix")
    if prefix is None:
        return _error(400, "invalid", "give the prefix to watch: /watch?prefix=auction/")
    try:
        check_prefix(prefix)
        key = reader(request)
    except ColonyError as exc:
        return auth_refused(exc)
    if relay.closing:
        return _error(503, "unavailable", "the relay is shutting down")
    if limits.max_watches < 1:
        return _error(403, "limit_exceeded", "this relay allows no watches (max_watches is 0)")
    ip = request.client.host if request.client else "unknown"
    if not relay.admit(ip):  # one slot of max_connections_per_ip, like a WebSocket
        return JSONResponse({"error": "too_many_connections",
                             "message": f"at most {limits.max_connections_per_ip} connections per address"},
                            status_code=429, headers={"retry-after": "5"})
    return WatchStream(relay, SseWatcher(key, limits.max_outbound_frames, limits.max_outbound_bytes), prefix, ip)


routes = [Route("/watch", watch)]

__all__ = ["SseWatcher", "WatchStream", "routes", "watch"]
