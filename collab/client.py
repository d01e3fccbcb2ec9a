"""Async agent client: authenticate, publish through an outbox, subscribe with verification.

One :class:`Client` holds one WebSocket to a relay and survives its loss: it reconnects with
capped exponential backoff (with jitter), says hello again, resubscribes every feed from the
last seq it verified, and resends every event that was not acknowledged yet. Resending is
safe because the relay deduplicates by event id (the ack then says ``dup``). A publish or a
subscription refused with a transient code (``unavailable``, ``rate_limited``) is sent again
after a backoff, up to ``retry_limit`` times (then the publish fails or the subscription ends).

Memory stays bounded on both sides:

* at most ``max_inflight`` events are on the wire unacknowledged; the rest wait in the outbox
  (so a reconnect never makes the relay answer with a burst of acks that would get us cut as
  a slow consumer: keep it well below the relay's ``max_outbound_frames / 2``);
* a subscription's queue holds at most ``max_queue`` items. When it is full the client
  *pauses* the feed (unsubscribes on the relay) and resumes it from the last queued seq once
  the consumer has drained half of the queue. Nothing is dropped and the socket reader never
  blocks, so a slow consumer of one feed never stalls acks or other feeds. Subscriptions
  with callbacks only (``max_queue=0``, the default when a callback is given) never queue.

All socket I/O is here; parsing and verification are in :mod:`collab.protocol`, a feed's
consumer side in :mod:`collab.subscription`, the outbox in :mod:`collab.publish_queue`, the
reconnect loop, backoff and writer (shared with the federation link) in :mod:`collab.reconnect`.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from . import frames
from .errors import AuthRequired, ColonyError, InvalidEvent, MalformedFrame, ProtocolError, RelayError
from .events import Event, Record, Snapshot, check_feed
from .keys import Keypair
from .publish_queue import PublishQueue
from .protocol import (
    Ack, Announce, Challenge, ClientProtocol, ErrorReply, Pong, Presence, ProtocolEvent, RecordReceived,
    SnapshotReceived, Synced, Unsubbed, Unwatched, Watching, Welcome,
)
from .reconnect import Next, Reconnecting, Writer, close_politely, recv_within
from .subscription import Signal, Subscription, until
from .urls import ws_url
from .watch import OnAnnounce, Watches

log = logging.getLogger(__name__)

RETRYABLE = frozenset(("unavailable", "rate_limited"))
DEFAULT_QUEUE = 1024


class Client(Reconnecting):
    """A reconnecting, verifying connection to one relay. Use as ``async with Client(...)``.

    The first connection is attempted once and its failure raises from ``__aenter__``; later
    losses are repaired automatically when ``reconnect`` is true. A ``relay_key`` pins the relay
    identity: a challenge (or record) from another key is refused for good."""

    def __init__(self, url: str | Sequence[str], key: Keypair | None = None, *, reconnect: bool = True,
                 relay_key: str | None = None, backoff_base: float = 0.1, backoff_max: float = 5.0,
                 max_inflight: int = 256, retry_limit: int | None = 10, open_timeout: float = 10.0) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise InvalidEvent("give the Client at least one relay URL")
        self.ws_urls = [ws_url(u) for u in self.urls]
        self._which = 0  # index of the URL in use; advances on every lost or failed connection
        super().__init__(backoff_base, backoff_max)
        self.key, self.reconnect = key, reconnect
        self.retry_limit, self.open_timeout = retry_limit, open_timeout
        self.protocol = ClientProtocol(key, relay_key)
        self.connected = False
        self.last_close: tuple[int | None, str | None] = (None, None)  # code and reason of the last loss
        self._subs: dict[str, Subscription] = {}
        self._outbox = PublishQueue(max_inflight)
        self._link: Writer | None = None
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None  # the first connection's outcome (__aenter__)
        self._fatal: BaseException | None = None
        self._signal = Signal()
        self._rids = itertools.count(1)
        self._sub_rids: dict[str, str] = {}
        self._pings: dict[str, asyncio.Future[None]] = {}
        self._watches = Watches(self.protocol)

    @property
    def url(self) -> str:
        """The relay base URL in use (several URLs: processes of one site, tried in turn)."""
        return self.urls[self._which]

    @property
    def ws_url(self) -> str:
        return self.ws_urls[self._which]

    # -- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Client:
        first = self._first = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._run_loop(), name="colony-client")
        try:
            await first
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, t: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; unacknowledged publishes fail, subscriptions end."""
        if self._closing:
            return
        self._closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # it logs its own failures; this is one it could not
                log.exception("the client's connection task failed")
        self._fail_all(ColonyError("client closed before the relay acknowledged the event"), end_subs=False)
        for sub in list(self._subs.values()):
            sub.end(None)
        self._subs.clear()

    @property
    def relay(self) -> str | None:
        """The relay's public key (hex) from the last challenge."""
        return self.protocol.relay

    @property
    def websocket(self) -> ClientConnection | None:
        """The current connection, if any (for diagnostics and tests)."""
        return self._link.ws if self._link is not None else None

    @property
    def pending(self) -> int:
        """Events in the outbox (not acknowledged yet)."""
        return len(self._outbox)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until authenticated, resubscribed and the outbox resent (raises if given up)."""
        await until(self._signal, lambda: self.connected, self._check_open, timeout)

    async def wait_disconnected(self, timeout: float | None = None) -> None:
        """Wait until the current connection is gone (the reconnect may follow shortly)."""
        await until(self._signal, lambda: not self.connected, lambda: None, timeout)

    def _check_open(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closing:
            raise ColonyError("client is closed")

    # -- publishing -----------------------------------------------------------------------
    def seen(self, feed: str) -> int:
        """Highest seq of ``feed`` delivered to our subscription (0 if not subscribed): the ctx."""
        sub = self._subs.get(feed)
        return sub.seq if sub is not None else 0

    def create_event(self, feed: str, kind: str, body: Any) -> Event:
        if self.key is None:
            raise AuthRequired("this client has no key to sign events with")
        return Event.create(self.key, feed, kind, body, ctx=self.seen(feed))

    async def publish(self, feed: str, kind: str, body: Any) -> Ack:
        """Sign and publish; returns once the relay stored it durably (raises RelayError if refused)."""
        return await self.publish_event(self.create_event(feed, kind, body))

    async def publish_event(self, event: Event) -> Ack:
        """Publish a signed event. Cancelling the caller does not withdraw it from the outbox."""
        return await asyncio.shield(self.submit(event))

    def submit(self, event: Event) -> asyncio.Future[Ack]:
        """Queue ``event`` in the outbox without waiting; the future resolves with its ack."""
        self._check_open()
        fut = self._outbox.add(event)
        self._pump()
        return fut

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every event submitted so far is acknowledged or refused."""
        futs = [asyncio.shield(p.future) for p in self._outbox.pending.values()]  # a timeout must not cancel them
        if futs:
            await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), timeout)

    @property
    def max_inflight(self) -> int:
        return self._outbox.max_inflight

    @max_inflight.setter
    def max_inflight(self, n: int) -> None:
        self._outbox.max_inflight = n

    def _pump(self) -> None:
        link = self._link
        if link is None or not self.connected:
            return
        for event in self._outbox.to_send():
            link.send(self.protocol.pub(event))

    def _requeue(self, event_id: str) -> None:
        if self._outbox.requeue(event_id):
            self._pump()

    # -- subscribing ----------------------------------------------------------------------
    async def subscribe(self, feed: str, since: int = 0, *, on_record: Callable[[Record], Any] | None = None,
                        on_snapshot: Callable[[Snapshot], Any] | None = None,
                        on_presence: Callable[[Presence], Any] | None = None,
                        max_queue: int | None = None) -> Subscription:
        """Follow ``feed`` from after ``since``; one Subscription per feed per client.

        ``max_queue`` defaults to 0 (callbacks only) when a record/snapshot callback is
        given and to 1024 otherwise; see the module docstring for what happens when full.
        """
        self._check_open()
        check_feed(feed)
        if feed in self._subs:
            raise InvalidEvent(f"already subscribed to {feed} on this client")
        if max_queue is None:
            max_queue = 0 if (on_record or on_snapshot) else DEFAULT_QUEUE
        sub = Subscription(feed, since, max_queue, on_record, on_snapshot, on_presence,
                           unsubscribe=self._unsub_frame, resubscribe=self._resubscribe, drop=self._drop_sub)
        self._subs[feed] = sub
        if self.connected:
            self._send_sub(sub)
        return sub

    def subscription(self, feed: str) -> Subscription | None:
        return self._subs.get(feed)

    def _send_sub(self, sub: Subscription) -> None:
        link = self._link
        if link is None:  # callers check `connected` first; it and the link are set together
            raise RuntimeError("_send_sub needs a connection")
        self.protocol.track(sub.feed, sub.seq, sub.head)
        rid = f"s{next(self._rids)}"
        self._sub_rids[rid] = sub.feed
        link.send(self.protocol.sub(sub.feed, rid=rid))

    def _unsub_frame(self, feed: str) -> str | None:
        """Send an unsub (if connected) and return its rid."""
        self.protocol.forget(feed)
        if self._link is None or not self.connected:
            return None
        rid = f"u{next(self._rids)}"
        self._link.send(self.protocol.unsub(feed, rid=rid))
        return rid

    def _drop_sub(self, sub: Subscription, error: BaseException | None) -> None:
        if self._subs.get(sub.feed) is sub:
            del self._subs[sub.feed]
            if not sub.unsub_pending:
                self._unsub_frame(sub.feed)
        sub.end(error)

    def _resubscribe(self, sub: Subscription) -> bool:
        """Follow the feed again (a paused subscription drained, or a transient refusal's backoff
        is over), if connected and still ours."""
        if not self.connected or self._subs.get(sub.feed) is not sub:
            return False
        self._send_sub(sub)
        return True

    # -- watching (docs/protocol.md 9.4) ------------------------------------------------------
    async def watch(self, prefix: str, on_announce: OnAnnounce) -> None:
        """Call ``on_announce`` with an :class:`Announce` for every new record of every feed
        (that our key may read) whose id starts with ``prefix``; returns once the relay watches
        (raises its RelayError, e.g. ``limit_exceeded``). Watched again after every reconnect."""
        self._check_open()
        await self._watches.add(prefix, on_announce, self._link.send if self.connected and self._link else None)

    async def unwatch(self, prefix: str) -> None:
        """Stop watching ``prefix`` (its callback is not called from now on)."""
        fut = self._watches.remove(prefix, self._link.send if self.connected and self._link else None)
        if fut is not None:
            await fut

    # -- misc -----------------------------------------------------------------------------
    async def ping(self, timeout: float | None = None) -> None:
        """Round trip to the relay (it answers after every frame we sent before)."""
        await self.wait_connected(timeout)
        link = self._link
        if link is None:  # wait_connected returned, so connected: cannot happen
            raise ColonyError("connection lost before ping")
        rid = f"p{next(self._rids)}"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[rid] = fut
        link.send(self.protocol.ping(rid))
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._pings.pop(rid, None)

    # -- connection loop ------------------------------------------------------------------
    async def _attempt(self) -> Next:
        first = self._first
        if first is None:  # __aenter__ sets it before it starts this loop
            raise RuntimeError("the connection loop runs only under `async with Client(...)`")
        try:
            ws = await connect(self.ws_url, open_timeout=self.open_timeout, close_timeout=2,
                               max_size=None)  # relay messages may exceed max_frame_bytes (snapshots)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            log.info("connecting to %s failed: %s", self.ws_url, exc)
            self._which = (self._which + 1) % len(self.ws_urls)
            if not first.done():
                if self._which == 0:  # every URL refused the first connection
                    first.set_exception(exc)
                    return Next.STOP
                return Next.NOW
        else:
            try:
                await self._handshake(ws)
                self._mark_up()
                self._connected(ws)
                if not first.done():
                    first.set_result(None)
                async for message in ws:
                    self._on_message(message)
                log.info("relay closed the connection (%s %s)", ws.close_code, ws.close_reason)
            except (ProtocolError, RelayError) as exc:  # wrong relay, or hello refused
                log.error("giving up on %s: %s", self.ws_url, exc)
                self._fail_all(exc)
                if not first.done():
                    first.set_exception(exc)
                return Next.STOP
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                log.info("connection to %s lost: %r", self.ws_url, exc)
            except Exception:  # a bug of ours: logged; a fresh connection repairs state
                log.exception("client connection to %s failed unexpectedly", self.ws_url)
            finally:
                self.last_close = (ws.close_code, ws.close_reason)
                self._disconnected()
                await close_politely(ws)
                if ws.close_code != 4008:  # a slow-consumer cut is about us, not that relay
                    self._which = (self._which + 1) % len(self.ws_urls)
            if not first.done():
                first.set_exception(ColonyError("connection closed during the handshake"))
                return Next.STOP
        if not self.reconnect:
            self._fail_all(ColonyError("connection to the relay lost (reconnect disabled)"))
            return Next.STOP
        return Next.LATER

    async def _handshake(self, ws: ClientConnection) -> None:
        while True:
            message = await recv_within(ws, self.open_timeout)
            for text in frames.split(message):
                ev = self.protocol.receive_frame(text)
                if isinstance(ev, Challenge):
                    if self.key is None:
                        return
                    await ws.send(self.protocol.hello())
                elif isinstance(ev, Welcome):
                    return
                elif isinstance(ev, ErrorReply):
                    raise RelayError(ev.code, ev.message)

    def _connected(self, ws: ClientConnection) -> None:
        self._link = Writer(ws)
        self.connected = True
        self._outbox.restart()
        for sub in self._subs.values():
            if sub.reconnected():
                self._send_sub(sub)
        self._watches.connected(self._link.send)
        self._pump()
        self._signal.notify()

    def _disconnected(self) -> None:
        if self._link is not None:
            self._link.stop()
        self._link = None
        self.connected = False
        self.protocol.connection_lost()
        self._sub_rids.clear()
        self._watches.connection_lost()
        for sub in self._subs.values():
            sub.set_synced(False)
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(ColonyError("connection lost before pong"))
        self._signal.notify()

    def _fail_all(self, exc: BaseException, end_subs: bool = True) -> None:
        if self._fatal is None and not self._closing:
            self._fatal = exc
        self._outbox.fail_all(exc)
        self._watches.fail(exc)
        if end_subs:
            for sub in list(self._subs.values()):
                sub.end(exc)
            self._subs.clear()
        self._signal.notify()

    # -- incoming -------------------------------------------------------------------------
    def _on_message(self, message: str | bytes) -> None:
        for text in frames.split(message):
            try:
                ev = self.protocol.receive_frame(text)
            except MalformedFrame as exc:
                log.warning("ignoring a malformed frame from the relay: %s", exc)
                continue
            except ColonyError as exc:
                feed = exc.feed
                sub = self._subs.get(feed) if feed is not None else None
                log.error("verification failed for %s: %s", feed, exc)
                if sub is not None:
                    self._drop_sub(sub, exc)
                continue
            if ev is not None:
                self._dispatch(ev)

    def _dispatch(self, ev: ProtocolEvent) -> None:
        if isinstance(ev, (RecordReceived, SnapshotReceived)):
            sub = self._subs.get(ev.feed)
            if sub is not None:
                sub.deliver(ev.record if isinstance(ev, RecordReceived) else ev.snapshot)
        elif isinstance(ev, Ack):
            p = self._outbox.settled(ev.id)
            if p is not None:
                self._outbox.remove(ev.id)
                if not p.future.done():
                    p.future.set_result(ev)
            self._pump()
        elif isinstance(ev, ErrorReply):
            self._on_error(ev)
        elif isinstance(ev, Synced):
            for rid in [r for r, f in self._sub_rids.items() if f == ev.feed]:
                del self._sub_rids[rid]  # accepted: an error can no longer follow
            sub = self._subs.get(ev.feed)
            if sub is not None:
                sub.set_synced(True)
        elif isinstance(ev, Presence):
            sub = self._subs.get(ev.feed)
            if sub is not None:
                sub.deliver_presence(ev)
        elif isinstance(ev, Unsubbed):
            self._on_unsubbed(ev)
        elif isinstance(ev, Announce):
            self._watches.on_announce(ev)
        elif isinstance(ev, (Watching, Unwatched)):
            self._watches.on_reply(ev)
        elif isinstance(ev, Pong):
            fut = self._pings.get(str(ev.rid))
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _on_error(self, ev: ErrorReply) -> None:
        p = self._outbox.settled(ev.id) if ev.id else None
        if p is not None:
            if ev.code in RETRYABLE and (self.retry_limit is None or p.attempts < self.retry_limit):
                delay = self._backoff(p.attempts)
                p.attempts += 1
                asyncio.get_running_loop().call_later(delay, self._requeue, p.event.id)
            else:
                self._outbox.remove(p.event.id)
                if not p.future.done():
                    p.future.set_exception(RelayError(ev.code, ev.message))
            self._pump()
            return
        feed = self._sub_rids.pop(str(ev.rid), None) if ev.rid is not None else None
        sub = self._subs.get(feed) if feed else None
        if sub is not None:
            self._sub_refused(sub, ev.code, ev.message)
            return
        if self._watches.on_error(ev):
            return
        log.warning("relay error %s: %s", ev.code, ev.message)

    def _sub_refused(self, sub: Subscription, code: str, message: str) -> None:
        """The relay refused or ended ``sub``: ask again after a backoff if ``code`` is transient
        (e.g. its storage was down), else end the subscription with the error."""
        n = sub.refusals
        if code in RETRYABLE and (self.retry_limit is None or n < self.retry_limit):
            sub.refusals = n + 1
            sub.set_synced(False)
            link = self._link  # a reconnect meanwhile resubscribes by itself
            asyncio.get_running_loop().call_later(self._backoff(n),
                                                  lambda: self._link is link and self._resubscribe(sub))
            return
        self._drop_sub(sub, RelayError(code, message))

    def _on_unsubbed(self, ev: Unsubbed) -> None:
        if ev.rid is None:  # the relay ended it (access revoked, its storage down, or it failed)
            sub = self._subs.get(ev.feed)
            if sub is not None:
                self._sub_refused(sub, ev.reason or "unsubbed", "the relay ended this subscription")
            return
        for sub in self._subs.values():
            if sub.unsubbed(ev.rid):
                return


__all__ = ["Ack", "Announce", "Client", "Presence", "Subscription", "ws_url"]
