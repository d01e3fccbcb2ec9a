"""The agent client's watches: feed-id prefixes it hears new records of (docs/protocol.md 9.4).

:class:`Watches` is what :class:`collab.client.Client` keeps per prefix: the callback, the
requests in flight (matched to the relay's ``watching`` / ``unwatched`` / ``error`` by
``rid``) and the callers waiting for them. It sends nothing itself: the client hands it a
``send`` while connected, and every watch is sent again on each new connection (a watch lives
as long as its connection on the relay). Announcements are not verified (they carry no
signature): they say a record exists; subscribing to, or reading, the feed verifies it.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

from .errors import ColonyError, RelayError
from .events import check_prefix
from .protocol import Announce, ClientProtocol, ErrorReply, Unwatched, Watching

log = logging.getLogger(__name__)

Send = Callable[[str], None]
OnAnnounce = Callable[[Announce], Any]


class Watches:
    """Prefix -> callback, and the watch / unwatch requests in flight."""

    def __init__(self, protocol: ClientProtocol) -> None:
        self.protocol = protocol
        self.handlers: dict[str, OnAnnounce] = {}
        self._rids = itertools.count(1)
        self._inflight: dict[str, tuple[str, str]] = {}  # rid -> ("watch" | "unwatch", prefix)
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}  # prefix -> callers of watch()
        self._unwatching: dict[str, asyncio.Future[None]] = {}  # rid -> the caller of unwatch()

    def add(self, prefix: str, on_announce: OnAnnounce, send: Send | None) -> asyncio.Future[None]:
        """Watch ``prefix`` (again: the callback is replaced); the future resolves on ``watching``
        (sent now if ``send`` is given, else on the next connection)."""
        check_prefix(prefix)
        self.handlers[prefix] = on_announce
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(prefix, []).append(fut)
        if send is not None:
            self._send_watch(prefix, send)
        return fut

    def remove(self, prefix: str, send: Send | None) -> asyncio.Future[None] | None:
        """Stop calling ``prefix``'s callback now; the future resolves on ``unwatched`` (None when
        not connected: the relay forgot every watch with the connection)."""
        check_prefix(prefix)
        self.handlers.pop(prefix, None)
        self._fail_waiting(prefix, ColonyError(f"unwatched {prefix!r} before the relay accepted it"))
        if send is None:
            return None
        rid = f"v{next(self._rids)}"
        self._inflight[rid] = ("unwatch", prefix)
        fut = self._unwatching[rid] = asyncio.get_running_loop().create_future()
        send(self.protocol.unwatch(prefix, rid))
        return fut

    def _send_watch(self, prefix: str, send: Send) -> None:
        rid = f"w{next(self._rids)}"
        self._inflight[rid] = ("watch", prefix)
        send(self.protocol.watch(prefix, rid))

    def _fail_waiting(self, prefix: str, exc: BaseException) -> None:
        for fut in self._waiting.pop(prefix, []):
            if not fut.done():
                fut.set_exception(exc)

    # -- the connection ---------------------------------------------------------------------
    def connected(self, send: Send) -> None:
        """A new connection: watch every prefix again."""
        for prefix in self.handlers:
            self._send_watch(prefix, send)

    def connection_lost(self) -> None:
        """Requests in flight get no answer now: watches are sent again, unwatches are done."""
        self._inflight.clear()
        for fut in self._unwatching.values():
            if not fut.done():
                fut.set_result(None)
        self._unwatching.clear()

    def fail(self, exc: BaseException) -> None:
        """The client closed or gave up: every waiting caller gets ``exc``."""
        for prefix in list(self._waiting):
            self._fail_waiting(prefix, exc)
        self.connection_lost()

    # -- from the relay ---------------------------------------------------------------------
    def on_announce(self, ev: Announce) -> None:
        """Call the callback of every watched prefix the feed starts with (once each)."""
        for prefix, cb in list(self.handlers.items()):
            if ev.feed.startswith(prefix):
                try:
                    cb(ev)
                except Exception:
                    log.exception("watch callback %r failed", cb)

    def on_reply(self, ev: Watching | Unwatched) -> None:
        req = self._inflight.pop(str(ev.rid), None) if ev.rid is not None else None
        if req is None:
            return
        if isinstance(ev, Watching):
            for fut in self._waiting.pop(req[1], []):
                if not fut.done():
                    fut.set_result(None)
        else:
            done = self._unwatching.pop(str(ev.rid), None)
            if done is not None and not done.done():
                done.set_result(None)

    def on_error(self, ev: ErrorReply) -> bool:
        """An error answering one of our requests (True if it was ours): a refused watch is
        forgotten and raised to its callers (a watch sent again on a reconnect is dropped too)."""
        req = self._inflight.pop(str(ev.rid), None) if ev.rid is not None else None
        if req is None:
            return False
        op, prefix = req
        exc = RelayError(ev.code, ev.message)
        if op == "watch":
            if prefix in self.handlers and prefix not in self._waiting:
                log.warning("the relay refused to watch %r again: %s", prefix, exc)
            self.handlers.pop(prefix, None)
            self._fail_waiting(prefix, exc)
        else:
            done = self._unwatching.pop(str(ev.rid), None)
            if done is not None and not done.done():
                done.set_exception(exc)
        return True


__all__ = ["OnAnnounce", "Watches"]
