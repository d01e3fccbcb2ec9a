"""The inbound half of a relay-to-relay link: the ``/fed`` WebSocket (docs/federation.md).

Only members of this relay's federation get past the handshake, and each proves its key.
After that the peer is trusted the way a session trusts its authenticated hello: a ``fwd``
is published as if the agent connection behind it (``key``) had sent it here, so the answer
is exactly the one that agent would have got; a ``sub`` reads every feed (members-only too)
and never gets a snapshot, because a mirror stores records verbatim.

A peer is bounded like an agent connection (``Limits``): one inbound link per peer process (the
handshake's ``process``; a newer one replaces it, close 4412), at most ``MAX_PEER_PROCESSES`` per
peer key (the processes of one site share its key), ``peer_max_subscriptions`` mirror subscriptions
(``limit_exceeded``), ``peer_frames_per_sec`` frames per peer (``rate_limited``), the
per-author rate of the events it forwards, and the heads limits of ``relay.federation.mirror``.
A peer whose heads accuse a feed we home falsely is cut off: ``false_evidence``, close 4409, and
its handshakes are refused for ``relay.federation.node.CUT_OFF`` seconds.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from collab import frames
from collab.errors import ColonyError, InvalidEvent, LimitExceeded, MalformedFrame, RateLimited, TooLarge
from collab.events import HEX64_RE, HEX128_RE, Event, check_feed
from collab.keys import verify

from relay.endpoints.connection import refuse_crowded, receive_pump
from relay.endpoints.outbox import CLOSE_GOING_AWAY, Outbox, OutboxSubscriber
from relay.endpoints.session import publish_answer
from relay.federation.link import CLOSE_REFUSED, HANDSHAKE_TIMEOUT, peer_bytes
from relay.federation.mirror import FalseEvidence

if TYPE_CHECKING:
    from relay.core.hub import Hub
    from relay.core.limits import Limits, RateLimiter
    from relay.federation.node import Federation
    from relay.server import Relay

log = logging.getLogger(__name__)

PEER_FRAMES = frozenset(("fwd", "sub", "unsub", "heads"))
CLOSE_FALSE_EVIDENCE = 4409
CLOSE_REPLACED = 4412
MAX_PEER_PROCESSES = 16  # inbound links per peer key (a site's processes, each named in its handshake)
PROCESS_RE = re.compile(r"(?:[0-9a-f]{16,64})?")  # the peer frame's optional `process`
_PRESENCE_PREFIX = '{"t":"presence"'


class PeerSession(OutboxSubscriber):
    """One authenticated peer's subscriptions and publishes (a hub Subscriber and a
    relay.endpoints.connection.Connection)."""

    key: str | None = None  # not an agent: never in a feed's participant list
    reads_any = True        # a peer mirrors members-only feeds too
    records_only = True     # a mirror stores records; it never wants a snapshot

    def __init__(self, hub: Hub, peer_key: str, out: Outbox, limits: Limits, frame_limiter: RateLimiter,
                 key_limiter: RateLimiter, cut_off: Callable[[str], None]) -> None:
        self.hub, self.peer_key, self.out, self.limits = hub, peer_key, out, limits
        self.frame_limiter, self.key_limiter, self.cut_off = frame_limiter, key_limiter, cut_off
        self.subs: set[str] = set()

    # -- Subscriber protocol -------------------------------------------------------------------
    def deliver(self, frame: str) -> None:
        if not frame.startswith(_PRESENCE_PREFIX):  # who is online is each relay's own business
            self.out.put(frame)

    # -- frames ----------------------------------------------------------------------------------
    async def handle_message(self, message: str | bytes) -> None:
        try:
            texts = frames.split(message)
        except MalformedFrame as exc:
            self.send(frames.error(exc.code, str(exc)))
            return
        for text in texts:
            frame: dict[str, Any] | None = None
            try:
                frame = frames.parse(text, None)
                if frame["t"] not in PEER_FRAMES:  # parsed first, so the refusal echoes the rid
                    raise MalformedFrame(f"{frame['t']!r} is not a frame of /fed (fwd, sub, unsub, heads)")
                if not self.frame_limiter.allow(self.peer_key):
                    raise RateLimited(f"over {self.limits.peer_frames_per_sec:g} frames per second from this peer "
                                      "(peer_frames_per_sec); slow down")
                await self._dispatch(frame)
            except FalseEvidence as exc:  # nothing of it was written: cut the peer off
                self.send(frames.error(exc.code, str(exc), **_context(frame)))
                self.cut_off(self.peer_key)
                self.out.close(CLOSE_FALSE_EVIDENCE, "false evidence")
                return
            except ColonyError as exc:
                self.send(frames.error(exc.code, str(exc), **_context(frame)))
            except Exception:
                log.exception("unexpected error handling a frame from peer %s", self.peer_key[:16])
                self.send(frames.error("internal", "the relay failed to handle this frame",
                                       rid=frame.get("rid") if frame else None))

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        t = frame["t"]
        if t == "fwd":
            self._forwarded(frame)
        elif t == "sub":
            await self._subscribe(frame)
        elif t == "unsub":
            feed = check_feed(frame.get("feed"))
            self.subs.discard(feed)
            self.hub.unsubscribe(self, feed)
            self.send(frames.with_rid({"t": "unsubbed", "feed": feed}, frame.get("rid")))
        elif t == "heads":
            await self._heads(frame)

    def _forwarded(self, frame: dict[str, Any]) -> None:
        rid, key = frame.get("rid"), frame.get("key")
        if key is not None and (not isinstance(key, str) or not HEX64_RE.match(key)):
            raise MalformedFrame("fwd key must be null or 64 hex chars")
        event = Event.from_wire(frame.get("event"))
        if event.size > self.limits.max_event_bytes:
            raise TooLarge(f"event is {event.size} bytes; the limit is {self.limits.max_event_bytes}")
        # the agent's rate holds whichever relay it uses; a duplicate, or an event its sender
        # (``key``) did not author, costs the author nothing (the peer's frame budget paid for it)
        charged = key == event.author and not self.hub.known(event)
        if charged and not self.key_limiter.allow(event.author):
            raise RateLimited("too many events from this key; slow down")
        if not self.hub.routing.is_home(event.feed):  # forwarding it on could loop between relays
            raise InvalidEvent(f"this relay is not the home of {event.feed} (do the members' --peer/--pin "
                               "settings differ?)")
        # queued in submission order, so a peer's events to one feed keep their order
        fut = self.hub.submit(event, key)
        fut.add_done_callback(lambda f: self._acked(f, event, rid, charged))

    def _acked(self, fut: asyncio.Future[tuple[int, bool]], event: Event, rid: Any, charged: bool = False) -> None:
        """The same answer relay.endpoints.session gives an agent (the ok carries this home's seq)."""
        frame = publish_answer(fut, event, rid)[0]
        if charged and frame.get("dup"):  # a duplicate after all: it costs its author nothing
            self.key_limiter.refund(event.author)
        self.send(frame)

    async def _subscribe(self, frame: dict[str, Any]) -> None:
        feed = check_feed(frame.get("feed"))
        since = frame.get("since", 0)
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise MalformedFrame("since must be a non-negative integer")
        if feed in self.subs:
            rt = self.hub.feeds.get(feed)
            if rt is not None and self in rt.subs:
                raise InvalidEvent(f"already subscribed to {feed}")
            self.subs.discard(feed)  # the relay ended it meanwhile: may subscribe again
        if len(self.subs) >= self.limits.peer_max_subscriptions:
            raise LimitExceeded(f"at most {self.limits.peer_max_subscriptions} mirror subscriptions per peer "
                                "(peer_max_subscriptions)")
        self.subs.add(feed)
        try:
            await self.hub.subscribe(self, feed, since)
        except BaseException:
            self.subs.discard(feed)
            raise

    async def _heads(self, frame: dict[str, Any]) -> None:
        heads = frame.get("heads")
        if not isinstance(heads, list) or not all(isinstance(h, dict) for h in heads):
            raise MalformedFrame("heads must be a list of {feed, seq, hash} objects")
        await self.hub.peer_heads(self.peer_key, heads)

    def closed(self) -> None:
        """The socket is gone: end every mirror subscription and stop the writer."""
        for feed in list(self.subs):
            self.hub.unsubscribe(self, feed)
        self.subs.clear()
        self.out.close(1000, "closed")


def _context(frame: dict[str, Any] | None) -> dict[str, Any]:
    """rid, feed and event id of the frame an error answers (as relay.endpoints.session does)."""
    if frame is None:
        return {}
    extra: dict[str, Any] = {"rid": frame.get("rid")}
    if isinstance(frame.get("feed"), str):
        extra["feed"] = frame["feed"]
    ev = frame.get("event")
    if isinstance(ev, dict):
        if isinstance(ev.get("id"), str) and len(ev["id"]) <= 64:
            extra["id"] = ev["id"]
        if "feed" not in extra and isinstance(ev.get("feed"), str) and len(ev["feed"]) <= 256:
            extra["feed"] = ev["feed"]
    return extra


async def _handshake(websocket: WebSocket, hub: Hub, fed: Federation | None) -> tuple[str, str] | None:
    """Challenge, check the peer's proof, prove our key; the peer's key and process (``""`` when it
    names none), or None (closed 4403)."""
    me = hub.relay_key.public_hex
    nonce = os.urandom(32).hex()
    await websocket.send_text(frames.encode({"t": "challenge", "nonce": nonce, "relay": me}))
    msg = await asyncio.wait_for(websocket.receive(), HANDSHAKE_TIMEOUT)
    if msg["type"] == "websocket.disconnect":
        return None
    try:
        frame = frames.parse(msg.get("text") or (msg.get("bytes") or b"").decode("utf-8", "replace"), None)
    except MalformedFrame as exc:
        await _refuse(websocket, str(exc))
        return None
    key, pnonce, sig = frame.get("key"), frame.get("nonce"), frame.get("sig")
    process = frame.get("process", "")
    if (frame["t"] != "peer" or not isinstance(key, str) or not HEX64_RE.match(key) or not isinstance(pnonce, str)
            or not 16 <= len(pnonce) <= 128 or not isinstance(sig, str) or not HEX128_RE.match(sig)
            or not isinstance(process, str) or not PROCESS_RE.fullmatch(process)):
        await _refuse(websocket, "expected {t: peer, key, nonce, sig, process?}")
        return None
    if key == me or not any(p.key == key for p in hub.routing.peers):
        await _refuse(websocket, f"{key[:16]}… is not a peer of this relay")
        return None
    if fed is not None and fed.is_cut_off(key):
        await _refuse(websocket, f"{key[:16]}… sent false evidence and is cut off for now")
        return None
    if not verify(bytes.fromhex(key), peer_bytes(nonce, me, key), bytes.fromhex(sig)):
        await _refuse(websocket, "peer signature does not verify against the challenge")
        return None
    ssig = hub.relay_key.sign(peer_bytes(pnonce, key, me)).hex()
    await websocket.send_text(frames.encode({"t": "peer_ok", "sig": ssig}))
    return key, process


async def _refuse(websocket: WebSocket, reason: str) -> None:
    log.warning("refused a federation link from %s: %s",
                websocket.client.host if websocket.client else "unknown", reason)
    await websocket.send_text(frames.encode(frames.error("unauthorized", reason)))
    await websocket.close(CLOSE_REFUSED, reason[:120])
    return


async def fed_endpoint(websocket: WebSocket) -> None:
    relay: Relay = websocket.app.state.relay
    if relay.closing:
        await websocket.close(CLOSE_GOING_AWAY)
        return
    ip = websocket.client.host if websocket.client else "unknown"
    if not relay.admit(ip):  # /fed counts toward the per-IP cap like /ws and /yjs (before any work)
        await refuse_crowded(websocket, relay.config.limits.max_connections_per_ip)
        return
    try:
        await _serve_peer(websocket, relay)
    finally:
        relay.release(ip)


async def _serve_peer(websocket: WebSocket, relay: Relay) -> None:
    await websocket.accept()
    hub = relay.hub
    try:
        peer = await _handshake(websocket, hub, relay.federation)
    except (TimeoutError, WebSocketDisconnect, OSError):
        peer = None
        try:
            await websocket.close(CLOSE_REFUSED, "handshake timed out")
        except Exception:  # the peer is gone already
            log.debug("closing a peer connection after a failed handshake failed", exc_info=True)
    if peer is None:
        return
    peer_key, process = peer
    fed: Federation = relay.federation
    limits = relay.config.limits
    out = Outbox.of(websocket, limits, flush_codes=(CLOSE_GOING_AWAY, CLOSE_FALSE_EVIDENCE))
    session = PeerSession(hub, peer_key, out, limits, fed.peer_frames, relay.key_limiter, fed.cut_off)
    # one link per process of the peer: a newer one from the same process replaces the old one (dead
    # or a duplicate); a site's processes (one key) keep one each, at most MAX_PEER_PROCESSES
    older = fed.inbound.pop((peer_key, process), None)
    same_key = [k for k in fed.inbound if k[0] == peer_key]
    if older is None and len(same_key) >= MAX_PEER_PROCESSES:
        older = fed.inbound.pop(same_key[0])  # the oldest (insertion order)
    fed.inbound[(peer_key, process)] = session
    if older is not None:
        older.out.close(CLOSE_REPLACED, "replaced by a newer link from the same peer")
    log.info("federation link from %s… up", peer_key[:16])
    try:
        await receive_pump(websocket, session, f"federation link from {peer_key[:16]}…")
    finally:
        session.closed()
        if fed.inbound.get((peer_key, process)) is session:
            del fed.inbound[(peer_key, process)]
        log.info("federation link from %s… down", peer_key[:16])
