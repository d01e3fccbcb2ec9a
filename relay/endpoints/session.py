"""One native-protocol connection: frames in, hub calls, frames out.

The session never touches the socket directly (a :class:`relay.endpoints.connection.Connection`):
it is handed messages by the receive pump and writes into its
:class:`relay.endpoints.outbox.Outbox`, whose writer task coalesces every frame queued during
one event-loop turn into one WebSocket message (frames separated by ``\\n``). A subscriber
whose outbox passes ``max_outbound_frames`` or ``max_outbound_bytes`` is disconnected (close
4008, or a reset when its socket takes no bytes) and resumes by ``seq``; the relay's memory
never grows without bound for a slow reader.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from collab import frames
from collab.errors import (
    BadSignature, ColonyError, InvalidEvent, LimitExceeded, MalformedFrame, RateLimited, TooLarge,
    Unavailable,
)
from collab.events import BAD_SIGNATURE, HEX64_RE, HEX128_RE, Event, check_feed, check_prefix, hello_bytes
from collab.keys import verify

from relay.core.hub import Hub
from relay.core.limits import Limits, RateLimiter, TokenBucket
from relay.core.verifier import check_here
from relay.endpoints.outbox import CLOSE_GOING_AWAY, Outbox, OutboxSubscriber, Transport

log = logging.getLogger(__name__)



def publish_answer(fut: asyncio.Future[tuple[int, bool]], event: Event, rid: Any) -> tuple[dict[str, Any], str | None]:
    """The frame answering a finished publish (``ok`` with its seq, or ``error``), and the
    refusal code when it was refused. Agents' sessions and peer links answer alike."""
    if fut.cancelled():
        return frames.error("unavailable", "the relay is shutting down", rid=rid, feed=event.feed,
                            id=event.id), "unavailable"
    exc = fut.exception()
    if exc is None:
        seq, dup = fut.result()
        reply: dict[str, Any] = {"t": "ok", "feed": event.feed, "id": event.id, "seq": seq}
        if dup:
            reply["dup"] = True
        return frames.with_rid(reply, rid), None
    if isinstance(exc, ColonyError):
        return frames.error(exc.code, str(exc), rid=rid, feed=event.feed, id=event.id), exc.code
    log.error("publish failed unexpectedly", exc_info=exc)
    return frames.error("internal", "the relay failed to store this event", rid=rid, feed=event.feed,
                        id=event.id), "internal"


class Session(OutboxSubscriber):
    """Protocol state of one connection (authenticated key, subscriptions)."""

    def __init__(self, hub: Hub, transport: Transport, ip: str, limits: Limits,
                 ip_limiter: RateLimiter, key_limiter: RateLimiter) -> None:
        self.hub, self.ip, self.limits = hub, ip, limits
        self.ip_limiter, self.key_limiter = ip_limiter, key_limiter
        self.key: str | None = None
        self.nonce = os.urandom(32).hex()
        self.subs: set[str] = set()
        self.out = Outbox.of(transport, limits)
        self.sub_bucket = TokenBucket(limits.subs_per_sec, limits.subs_burst)  # sub churn (presence changes)
        # publishes that cost their author nothing (duplicates, events this connection did not
        # author) are charged here instead, at the per-key rate: a replay never drains the author
        self.pub_bucket = TokenBucket(limits.events_per_sec_key, limits.burst_key)

    # Subscriber protocol (relay.core.fanout.Subscriber, used by the hub)
    reads_any = False     # read access is checked for this connection's key
    records_only = False  # a doc subscription may start from a snapshot
    shared_presence = True  # presence frames may come framed once for many (relay.core.fanout)

    def start(self) -> None:
        self.send({"t": "challenge", "nonce": self.nonce, "relay": self.hub.relay_key.public_hex})

    async def handle_message(self, message: str | bytes) -> None:
        """Process one WebSocket message (one frame or a newline-separated batch)."""
        size = len(message)
        if isinstance(message, str) and not message.isascii():
            size = len(message.encode("utf-8", "surrogatepass"))  # the limit is in UTF-8 bytes
        if size > self.limits.max_frame_bytes:
            self.send(frames.error("too_large", f"message is {size} bytes; the limit is "
                                                f"{self.limits.max_frame_bytes}"))
            return
        try:
            texts = frames.split(message)
        except MalformedFrame as exc:
            self.send(frames.error(exc.code, str(exc)))
            return
        for text in texts:
            frame: dict[str, Any] | None = None
            try:
                frame = frames.parse(text)
                await self._dispatch(frame)
            except ColonyError as exc:
                extra: dict[str, Any] = {}
                if frame is not None and frame.get("t") == "pub":  # refused before reaching the hub
                    self.hub.metrics.rejected.inc(exc.code)
                if frame is not None:  # which members an error carries: docs/protocol.md 13.3
                    extra["rid"] = frame.get("rid")
                    if frame["t"] in ("sub", "unsub") and isinstance(frame.get("feed"), str):
                        extra["feed"] = frame["feed"]
                    ev = frame.get("event")
                    if isinstance(ev, dict) and isinstance(ev.get("id"), str) and len(ev["id"]) <= 64:
                        extra["id"] = ev["id"]
                self.send(frames.error(exc.code, str(exc), **extra))
            except Exception:
                log.exception("unexpected error handling a frame from %s", self.ip)
                self.send(frames.error("internal", "the relay failed to handle this frame",
                                       rid=frame.get("rid") if frame else None))

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        t = frame["t"]
        if t == "pub":
            await self._publish(frame)
        elif t == "sub":
            await self._subscribe(frame)
        elif t == "unsub":
            feed = check_feed(frame.get("feed"))
            self.subs.discard(feed)
            self.hub.unsubscribe(self, feed)
            self.send(frames.with_rid({"t": "unsubbed", "feed": feed}, frame.get("rid")))
        elif t == "hello":
            self._hello(frame)
        elif t == "ping":
            self.send(frames.with_rid({"t": "pong"}, frame.get("rid")))
        elif t == "watch":  # docs/protocol.md 9.4 (relay.core.watch)
            prefix = check_prefix(frame.get("prefix"))
            await self.hub.watches.add(self, prefix, self.limits.max_watches)
            if self.out.closed:  # the connection ended meanwhile
                self.hub.watches.remove_all(self)
            self.send(frames.with_rid({"t": "watching", "prefix": prefix}, frame.get("rid")))
        elif t == "unwatch":
            prefix = check_prefix(frame.get("prefix"))
            self.hub.watches.remove(self, prefix)
            self.send(frames.with_rid({"t": "unwatched", "prefix": prefix}, frame.get("rid")))

    def announce(self, body: str) -> None:
        """A watched feed has a new record (relay.core.watch.Watcher)."""
        self.out.put('{"t":"announce",' + body[1:])

    def _hello(self, frame: dict[str, Any]) -> None:
        key, sig = frame.get("key"), frame.get("sig")
        if not (isinstance(key, str) and HEX64_RE.match(key) and isinstance(sig, str) and HEX128_RE.match(sig)):
            raise MalformedFrame("hello needs key (64 hex) and sig (128 hex)")
        if self.key is not None and self.key != key:
            raise InvalidEvent("this connection is already authenticated as another key")
        signed = hello_bytes(key, self.nonce, self.hub.relay_key.public_hex)
        if not verify(bytes.fromhex(key), signed, bytes.fromhex(sig)):
            raise BadSignature("hello signature does not verify against the challenge")
        self.key = key
        self.send(frames.with_rid({"t": "welcome", "key": key}, frame.get("rid")))

    async def _subscribe(self, frame: dict[str, Any]) -> None:
        feed = check_feed(frame.get("feed"))
        since = frame.get("since")
        if since is None:  # null is the same as absent (docs/protocol.md 9.1)
            since = 0
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise MalformedFrame("since must be a non-negative integer")
        if feed in self.subs:
            rt = self.hub.feeds.get(feed)
            if rt is not None and self in rt.subs:
                raise InvalidEvent(f"already subscribed to {feed}")
            self.subs.discard(feed)  # the relay ended it (unsubbed with a reason): may subscribe again
        if len(self.subs) >= self.limits.max_subscriptions:
            raise LimitExceeded(f"at most {self.limits.max_subscriptions} subscriptions per connection")
        if not self.sub_bucket.take():
            self.hub.metrics.refused.inc("rate_limited")
            raise RateLimited(f"too many subscriptions on this connection; at most {self.limits.subs_per_sec:g} "
                              f"per second after a burst of {self.limits.subs_burst}")
        self.subs.add(feed)
        try:
            await self.hub.subscribe(self, feed, since)
        except BaseException:
            self.subs.discard(feed)
            raise
        if self.out.closed:  # the connection ended while the subscription was being served
            self.hub.unsubscribe(self, feed)

    async def _publish(self, frame: dict[str, Any]) -> None:
        rid = frame.get("rid")
        if self.hub.draining:
            raise Unavailable("the relay is shutting down; publish again after reconnecting")
        if not self.ip_limiter.allow(self.ip):
            raise RateLimited("too many events from this address; slow down")
        raw = frame.get("event")
        event, signed = Event.unverified(raw)  # the signature is checked off the loop (Hub.submit)
        try:  # from here on, an error names the event's feed (docs/protocol.md 13.3)
            if event.size > self.limits.max_event_bytes:
                raise TooLarge(f"event is {event.size} bytes; the limit is {self.limits.max_event_bytes}")
            # The author's budget pays only for its own new events, sent by its own connection: a
            # duplicate (known here) or an event this connection did not author (a replay of someone
            # else's) is charged to this connection instead (and was charged to its IP above).
            charged = event.author == self.key and not self.hub.known(event)
            if charged:
                if not self.key_limiter.allow(event.author):
                    raise RateLimited("too many events from this key; slow down")
            elif not self.pub_bucket.take():
                raise RateLimited("too many duplicate or relayed events on this connection; slow down")
        except ColonyError as exc:
            refusal = exc if check_here(event, signed) else BadSignature(BAD_SIGNATURE)  # checked first (13.3)
            self.hub.metrics.rejected.inc(refusal.code)
            feed = None if refusal.code == "bad_signature" else event.feed  # no feed before validation passed
            self.send(frames.error(refusal.code, str(refusal), rid=rid, feed=feed, id=event.id))
            return
        # the hub routes it (forwarded to its home, gated, or sequenced here), in submission order
        fut = self.hub.submit(event, self.key, signed)
        fut.add_done_callback(lambda f: self._acked(f, event, rid, charged))

    def _acked(self, fut: asyncio.Future[tuple[int, bool]], event: Event, rid: Any, charged: bool = False) -> None:
        if not fut.cancelled() and fut.exception() is None:
            seq, dup = fut.result()
            if not dup:  # the hot path: publish_answer's ok frame written out (a feed id and an
                #          event id are never escaped in JSON: docs/protocol.md's character sets)
                tail = "}" if rid is None else ',"rid":' + json.dumps(rid, ensure_ascii=False) + "}"
                self.out.put(f'{{"t":"ok","feed":"{event.feed}","id":"{event.id}","seq":{seq}' + tail)
                return
        frame, refused = publish_answer(fut, event, rid)
        if refused == "bad_signature":  # refused in the event's validation: no feed (docs/protocol.md 13.3)
            frame.pop("feed", None)
        if refused is not None:
            self.hub.metrics.rejected.inc(refused)
        elif charged and frame.get("dup"):  # a duplicate after all (found in storage): it costs nothing
            self.key_limiter.refund(event.author)
        if refused == "bad_signature" and charged:  # not the author's event after all
            self.key_limiter.refund(event.author)
        self.send(frame)

    def closed(self) -> None:
        """The socket is gone: leave every feed (presence) and stop the writer."""
        for feed in list(self.subs):
            self.hub.unsubscribe(self, feed)
        self.subs.clear()
        self.hub.watches.remove_all(self)
        self.out.close(1000, "closed")


__all__ = ["CLOSE_GOING_AWAY", "Session", "publish_answer"]
