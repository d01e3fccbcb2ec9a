"""The y-websocket endpoint ``/yjs/{name}``: feed ``doc/{name}`` for unmodified Yjs clients.

Every document with Yjs clients on this relay process has one
:class:`relay.endpoints.yjs_room.Room`, an ordinary subscriber of the feed
(``relay.core.hub``) that turns its records into Yjs update messages and its participants
(native agents) into awareness states. Each WebSocket is a :class:`YjsConnection` (a
``relay.endpoints.connection.Connection``: the one receive pump, the one outbox); the
y-protocol itself (parsing, limits) is the sans-I/O :mod:`relay.endpoints.yjs_protocol`, the
awareness rules :mod:`relay.endpoints.yjs_awareness`. :class:`YjsService` holds the rooms and,
in a section of its own, the agents' display names.

Yjs clients are anonymous: they read (any feed that is not ``members``-only) and their
edits are dropped with y-protocols' permission-denied message, unless they present a
capability token (``collab.capability``) from the feed's owner in the ``token`` query
parameter. With a write capability their edits are recorded as ``doc.update`` events signed
by the relay whose body carries the capability. ``docs/protocol.md`` section 21 is normative.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from collections import deque
from typing import Any, TYPE_CHECKING

from starlette.websockets import WebSocket

from collab.canonical import canonical
from collab.capability import Capability
from collab.errors import Busy, ColonyError, InvalidEvent, Unauthorized
from collab.events import EVENT_DOMAIN, Event, b64, check_feed, now_ms
from collab.keys import Keypair
from collab.namespaces.doc import EnginePanic
from collab.sandbox import VERDICTS

from relay.core.worker import FeedRuntime
from relay.endpoints.connection import receive_pump, refuse_crowded
from relay.endpoints.outbox import CLOSE_NORMAL, Outbox
from relay.endpoints.yjs_protocol import (
    CLOSE_BAD_TOKEN, CLOSE_FORBIDDEN, CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_MALFORMED, CLOSE_TOO_BIG, CLOSE_TRY_LATER,
    CLOSE_UNSUPPORTED, AwarenessChange, AwarenessQuery, Close, Denied, Dropped, SyncRequest, Write, YjsPeer,
    YProtocolError, awareness_message, is_empty_update, permission_denied, sync_step1, sync_step2, update_budget,
)
from relay.endpoints.yjs_concat import concat
from relay.endpoints.yjs_room import Room, clean_name

if TYPE_CHECKING:
    from relay.server import Relay

log = logging.getLogger(__name__)
_PROBES = itertools.count(1 << 41)  # tags of the blank documents /yjs updates are vetted on

READ_ONLY = ("read-only: this relay records edits from Yjs clients only with a write capability "
             "(connect with ?token=<colony grant FEED --write>)")
EXPIRED = "the write capability has expired: edits are no longer recorded"
DENIED_EVERY = 1.0      # seconds between two permission-denied messages to one connection
LOG_EVERY = 10.0        # seconds between two log lines for the same reason and connection
MAX_CHUNK = 32          # a writer's edits submitted together (one event when they join: yjs_concat)


# -- the events a writer's edits become ------------------------------------------------------
class EditEvents:
    """Makes the relay-signed ``doc.update`` events of one writer (21.4): the same event, bytes for
    bytes, as ``Event.create(key, feed, "doc.update", {"update": ..., "cap": cap})``, with the
    canonical encoding of everything but the update, ``ctx`` and ``ts`` done once per connection
    (canonical JSON sorts members: author, body {cap, update}, ctx, feed, kind, ts; base64 and hex
    need no escaping)."""

    __slots__ = ("_head", "_key", "_mid", "cap", "feed")

    def __init__(self, key: Keypair, feed: str, cap: dict[str, Any]) -> None:
        self._key, self.feed, self.cap = key, check_feed(feed), cap
        self._head = (EVENT_DOMAIN + b'{"author":"' + key.public_hex.encode() + b'","body":{"cap":'
                      + canonical(cap) + b',"update":"')
        self._mid = b',"feed":' + canonical(feed) + b',"kind":"doc.update","ts":'

    def create(self, update: bytes, ctx: int, ts: int | None = None) -> Event:
        b64u = b64(update)
        ts = now_ms() if ts is None else ts
        signing = b"".join((self._head, b64u.encode(), b'"},"ctx":', str(ctx).encode(), self._mid,
                            str(ts).encode(), b"}"))
        key = self._key
        return Event(self.feed, "doc.update", key.public_hex, ts, ctx, {"update": b64u, "cap": self.cap},
                     key.sign(signing).hex(), hashlib.sha256(signing).hexdigest(), len(signing))


# -- one connection --------------------------------------------------------------------------
class YjsConnection:
    """One Yjs WebSocket: its protocol state, its outbox and, if it may write, its edits in flight."""

    def __init__(self, service: YjsService, websocket: WebSocket, ip: str, rt: FeedRuntime,
                 cap: Capability | None) -> None:
        relay = service.relay
        self.service, self.ip, self.feed, self.cap = service, ip, rt.feed, cap
        self.config = relay.config
        self.peer = YjsPeer(self.config.yjs, self.config.limits.max_frame_bytes,
                            writable=cap is not None and cap.allows("write"), now=time.monotonic())
        self.out = Outbox.of(websocket, self.config.limits, slow_reason="slow consumer: reconnect",
                          flush_codes=(CLOSE_NORMAL, CLOSE_GOING_AWAY))
        self.room: Room | None = None
        self._writes: deque[bytes] = deque()
        self._write_bytes = 0
        self._initials: set[asyncio.Task[None]] = set()  # sync steps 2 being vetted
        self._answers: list[asyncio.Future[tuple[int, bool]]] = []  # the chunk of edits in flight
        self._unanswered = 0
        self._waiting: asyncio.Task[None] | None = None  # for the IP's rate, or for the feed to load
        self._paid = False  # the next edit's rate token was taken (by acquire)
        self._denied_at = float("-inf")
        self._logged: dict[str, float] = {}
        self._expiry: asyncio.TimerHandle | None = None
        self._budget = 0
        self._events: EditEvents | None = None
        if cap is not None:
            self._events = EditEvents(relay.hub.relay_key, self.feed, cap.to_wire())
            overhead = Event.create(relay.hub.relay_key, self.feed, "doc.update",
                                    {"update": "", "cap": cap.to_wire()}, ctx=2**53 - 1, ts=2**53 - 1).size
            self._budget = update_budget(self.config.limits.max_event_bytes, overhead)
            self._watch_expiry(cap.exp)

    def __repr__(self) -> str:
        return f"<YjsConnection {self.feed} from {self.ip}{' writer' if self.peer.writable else ''}>"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, room: Room) -> None:
        """Per y-websocket's server: sync step 1 first, then every awareness state there is."""
        self.room = room
        self.send(sync_step1(room.rt.state.doc.get_state()))
        snapshot = room.aw.snapshot()
        if snapshot:
            self.send(awareness_message(snapshot))

    def send(self, msg: bytes) -> None:
        self.out.put_bytes(msg)

    def closed(self) -> None:
        """The socket is gone (called by Relay.end_session). Queued edits are still recorded."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self.room is not None:
            self.room.leave(self)
            self.room = None
        self.out.close(1000, "closed")

    def _watch_expiry(self, exp: int) -> None:
        delay = (exp - now_ms()) / 1000
        if delay > 0:  # (in steps: event loops cap long timers)
            self._expiry = asyncio.get_running_loop().call_later(min(delay, 86_400.0), self._watch_expiry, exp)
        else:
            self._cap_expired()

    def _cap_expired(self) -> None:
        self.peer.writable = False
        rt = self.service.relay.hub.feeds.get(self.feed)
        if rt is not None and not rt.access.can_read(None):
            self.out.close(CLOSE_BAD_TOKEN, "the capability has expired")

    def note(self, reason: str, level: int = logging.INFO) -> None:
        """Log a dropped message, at most once per LOG_EVERY seconds per reason."""
        now = time.monotonic()
        if now - self._logged.get(reason, float("-inf")) >= LOG_EVERY:
            self._logged[reason] = now
            log.log(level, "yjs %s from %s: %s", self.feed, self.ip, reason)

    # -- incoming ----------------------------------------------------------------------------
    async def handle_message(self, message: str | bytes) -> None:
        """One WebSocket message (relay.endpoints.connection.Connection)."""
        if isinstance(message, str):
            self.out.close(CLOSE_UNSUPPORTED, "y-protocol messages are binary")
        else:
            self.handle(message)

    def handle(self, data: bytes) -> None:
        room = self.room
        if room is None or self.out.closed:
            return
        for action in self.peer.receive(data, time.monotonic()):
            if isinstance(action, Close):
                self.note(action.reason, logging.WARNING)
                self.out.close(action.code, action.reason)
                return
            if isinstance(action, SyncRequest):
                try:
                    self.send(sync_step2(room.diff(action.state_vector)))
                except EnginePanic:  # the document we hold, not this peer: reloaded, then reconnect
                    room.rt.poisoned()
                    self.out.close(CLOSE_INTERNAL, "the relay could not encode the document; reconnect")
                    return
                except YProtocolError as exc:
                    self.note(str(exc), logging.WARNING)
                    self.out.close(CLOSE_MALFORMED, f"malformed y-protocol message: {exc}")
                    return
            elif isinstance(action, Write):
                self._write(action.update, action.initial)
            elif isinstance(action, Denied):
                self._deny(action.update, action.initial)
            elif isinstance(action, AwarenessChange):
                room.awareness(self, action.entries)
            elif isinstance(action, AwarenessQuery):
                self.send(awareness_message(room.aw.snapshot()))
            elif isinstance(action, Dropped):
                self.note(action.reason)

    async def _vetted(self, updates: list[bytes]) -> bool:
        """Whether the Yjs engine takes ``updates`` (decode, apply, merge), asked of the sandbox on a
        blank document, before this process runs yrs on them (a sync step 2, which ``Room.novel``
        diffs against the document; the feed's worker checks what is recorded again on the
        document before it is stored). A refusal closes the connection (4400)."""
        sandbox = self.service.relay.hub.sandbox
        verdicts = await sandbox.check(self.feed, (next(_PROBES), 0), updates, lambda: b"", keep=False)
        bad = next((v for v in verdicts if not v.ok), None)
        if bad is None:
            return True
        name = VERDICTS.get(bad.code, "bad")
        self.service.relay.hub.metrics.yjs_refused.inc(name)
        log.warning("yjs update to %s from %s refused by the sandbox (%s): %s", self.feed, self.ip, name, bad.reason)
        self._writes.clear()
        self._write_bytes = 0
        self.out.close(CLOSE_MALFORMED, f"malformed y-protocol message: the update was refused by the engine ({name})")
        return False

    def _initial(self, update: bytes, write: bool) -> None:
        """A sync step 2: vetted first, then only what the document lacks is recorded (or denied)."""
        async def run() -> None:
            room = self.room
            if not await self._vetted([update]) or room is None or self.out.closed:
                return
            novel = room.novel(update)
            if novel is None:
                return  # a reconnecting client's state that the relay already has
            if write:
                self._write(novel, False)
            else:
                self._deny(novel, False)

        task = asyncio.get_running_loop().create_task(run(), name=f"yjs-initial:{self.feed}")
        self._initials.add(task)
        task.add_done_callback(self._initials.discard)

    def _deny(self, update: bytes, initial: bool) -> None:
        if initial:
            self._initial(update, False)
            return
        expired = self.cap is not None and self.cap.allows("write")
        self.note("dropped an edit: " + ("capability expired" if expired else "read-only connection"))
        now = time.monotonic()
        if now - self._denied_at >= DENIED_EVERY:
            self._denied_at = now
            self.send(permission_denied(EXPIRED if expired else READ_ONLY))

    def _write(self, update: bytes, initial: bool) -> None:
        cap, room = self.cap, self.room
        if cap is None or room is None:  # the peer writes only with a write capability, once started
            raise RuntimeError("an edit needs a write capability and a room")
        if initial:
            self._initial(update, True)
            return
        if is_empty_update(update):  # e.g. what a sync step 2 adds: ignored, never recorded (16.1)
            return
        if now_ms() >= cap.exp:
            self._cap_expired()
            self._deny(update, False)
            return
        if len(update) > self._budget:
            self.note(f"edit of {len(update)} bytes is over the limit", logging.WARNING)
            self.out.close(CLOSE_TOO_BIG, f"an edit of {len(update)} bytes does not fit in one event "
                                          f"(max_event_bytes {self.config.limits.max_event_bytes})")
            return
        self._writes.append(update)
        self._write_bytes += len(update)
        if self._write_bytes > self.config.yjs.max_queued_write_bytes:
            self.out.close(CLOSE_TRY_LATER, "edits arrive faster than the relay can record them")
            return
        self._pump()

    def _pump(self) -> None:
        """Submit the next chunk of queued edits unless one is in flight: the edits queued while the
        previous chunk was recorded, as one event when they are the writer's run of consecutive
        transactions (``relay.endpoints.yjs_concat``, bytes joined without the engine), else one
        event each, submitted together, so the feed's worker takes them in one batch and the Yjs
        sandbox checks them in one round trip, on the document, before anything stores or folds
        them (this process runs no engine on them). Done in callbacks, not a task per chunk (at
        moderate load every edit is a chunk); a task only waits for the IP's rate or for the feed to load."""
        if self._answers or self._waiting is not None or not self._writes:
            return
        relay, events = self.service.relay, self._events
        hub = relay.hub
        if events is None:  # _write called this, and it checked
            raise RuntimeError("recording edits needs a write capability")
        rt = hub.feeds.get(self.feed)
        if rt is None:
            self._wait(hub.runtime(self.feed), False)
            return
        me, limiter, size = hub.relay_key.public_hex, relay.ip_limiter, 0
        chunk: list[bytes] = []
        while self._writes and len(chunk) < MAX_CHUNK and (not chunk or size + len(self._writes[0]) <= self._budget):
            if self._paid:
                self._paid = False
            elif not limiter.allow(self.ip):
                if not chunk:  # over the IP's publish rate: wait for a token (the edits wait queued)
                    self._wait(limiter.acquire(self.ip), True)
                    return
                break
            update = self._writes.popleft()
            size += len(update)
            chunk.append(update)
        self._write_bytes -= size
        try:
            joined = concat(chunk)  # one writer's run of edits: one event (21.4); else one event each
            answers = [hub.submit(events.create(update, rt.seq), me)  # routed by the hub
                       for update in (chunk if joined is None else (joined,))]
        except Exception:  # a bug: the connection closes (what was submitted is answered all the same)
            log.warning("recording a yjs edit to %s failed", self.feed, exc_info=True)
            self._broke()
            return
        self._answers, self._unanswered = answers, len(answers)
        for answer in answers:
            answer.add_done_callback(self._answered)

    def _wait(self, until: Any, paid: bool) -> None:
        async def run() -> None:
            try:
                await until
            except Exception:  # the feed could not be loaded
                log.warning("recording a yjs edit to %s failed", self.feed, exc_info=True)
                self._broke()
                return
            finally:
                self._waiting = None
            self._paid = paid  # acquire took the token of the next edit
            self._pump()

        self._waiting = asyncio.get_running_loop().create_task(run(), name=f"yjs-write:{self.feed}")

    def _answered(self, _fut: asyncio.Future[tuple[int, bool]]) -> None:
        self._unanswered -= 1
        if self._unanswered:
            return
        answers, self._answers = self._answers, []
        for answer in answers:  # the first refusal, in the order the edits came
            if answer.cancelled():  # the relay is shutting down
                self._stop_writing()
                return
            exc = answer.exception()
            if exc is not None:
                self._failed(exc)
                return
        self._pump()

    def _failed(self, exc: BaseException) -> None:
        self._stop_writing()
        if isinstance(exc, Unauthorized):  # e.g. the capability expired before the event was made
            log.info("yjs edit to %s refused: %s", self.feed, exc)
            self.peer.writable = False
            self.send(permission_denied(f"edit refused: {exc}"))
        elif isinstance(exc, InvalidEvent):  # the feed's worker had the sandbox refuse it on the document
            log.warning("yjs edit to %s from %s refused: %s", self.feed, self.ip, exc)
            self.out.close(CLOSE_MALFORMED, "malformed y-protocol message: the update was refused by the engine")
        else:
            log.warning("recording a yjs edit to %s failed: %r", self.feed, exc, exc_info=exc)
            self._broke()

    def _broke(self) -> None:
        self._stop_writing()
        self.out.close(CLOSE_INTERNAL, "the relay could not record an edit; reconnect to resync")

    def _stop_writing(self) -> None:
        """After a refused edit: drop the queued ones (the connection closes or turns read-only);
        the chunk's later edits were answered on their own (each was checked on the document)."""
        self._writes.clear()
        self._write_bytes = 0


# -- the endpoint ----------------------------------------------------------------------------
class YjsService:
    """The rooms of one running relay, and the agents' names for their awareness states."""

    def __init__(self, relay: Relay) -> None:
        self.relay, self.hub = relay, relay.hub
        self.rooms: dict[str, Room] = {}
        self.hub.listeners.append(self._on_record)

    @classmethod
    def of(cls, websocket: WebSocket) -> YjsService:
        relay: Relay = websocket.app.state.relay
        svc: YjsService | None = getattr(websocket.app.state, "yjs", None)
        if svc is None or svc.hub is not relay.hub:
            svc = websocket.app.state.yjs = cls(relay)
        return svc

    async def join(self, conn: YjsConnection) -> Room:
        rt = await self.hub.runtime(conn.feed)  # loaded already: returns at once
        room = self.rooms.get(conn.feed)
        if room is None:
            room = self.rooms[conn.feed] = Room(self, rt)
            room.start()
        room.join(conn)
        return room

    # -- agents' names (an index of agent.profile names; the relay's directory may serve it) --
    async def agent_name(self, key: str, max_age: float = 0.0) -> str | None:
        """The name in the latest ``agent.profile`` the agent itself wrote to ``agent/<key>``,
        from the relay's directory (which keeps it current, also across processes)."""
        try:
            prof = await self.relay.directory.lookup(key)
        except Exception as exc:  # storage trouble: no name this time
            log.debug("profile of %s not read: %r", key[:12], exc, exc_info=True)
            return None
        return clean_name(prof.name) if prof is not None else None

    def _on_record(self, rec: Any, _rjson: str) -> None:
        ev = rec.event
        if ev.kind != "agent.profile" or rec.feed != f"agent/{ev.author}" or not isinstance(ev.body, dict):
            return
        for room in list(self.rooms.values()):  # the directory indexed it already (its listener is first)
            room.profile_changed(ev.author)


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    log.info("yjs connection refused (%d): %s", code, reason)
    await websocket.close(code, reason[:120])


async def yjs_endpoint(websocket: WebSocket) -> None:
    relay: Relay = websocket.app.state.relay
    if relay.closing:
        await websocket.close(1001)
        return
    ip = websocket.client.host if websocket.client else "unknown"
    if not relay.admit(ip):
        await refuse_crowded(websocket, relay.config.limits.max_connections_per_ip)
        return
    try:
        await _serve(websocket, relay, ip)
    finally:
        relay.release(ip)


async def _serve(websocket: WebSocket, relay: Relay, ip: str) -> None:
    await websocket.accept()  # refusals below then carry a close code and a reason
    try:
        feed = check_feed("doc/" + websocket.path_params.get("name", ""))
    except InvalidEvent as exc:
        await _refuse(websocket, CLOSE_MALFORMED, f"invalid document name: {exc}")
        return
    try:
        rt = await relay.hub.runtime(feed)
    except Busy as exc:
        relay.hub.metrics.refused.inc(exc.code)
        await _refuse(websocket, CLOSE_TRY_LATER, "the relay holds as many documents as it may; retry later")
        return
    except Exception:
        log.exception("loading %s for a yjs client failed", feed)
        await _refuse(websocket, CLOSE_INTERNAL, "the relay could not open this document")
        return
    try:
        await _connect(websocket, relay, ip, rt)
    finally:
        relay.hub.release_if_empty(feed)  # a document nobody wrote is not kept for nobody


async def _connect(websocket: WebSocket, relay: Relay, ip: str, rt: FeedRuntime) -> None:
    feed = rt.feed
    cap: Capability | None = None
    token = websocket.query_params.get("token")
    if token is not None:
        try:
            cap = Capability.from_token(token)
            cap.check(feed, rt.access.owner, "read", now_ms())
        except ColonyError as exc:
            await _refuse(websocket, CLOSE_BAD_TOKEN, f"capability refused: {exc}")
            return
    if cap is None and not rt.access.can_read(None):
        await _refuse(websocket, CLOSE_FORBIDDEN, "this document is members-only: connect with a capability token")
        return
    service = YjsService.of(websocket)
    conn = YjsConnection(service, websocket, ip, rt, cap)
    relay.sessions.add(conn)  # counted in /health, closed at shutdown
    try:
        conn.start(await service.join(conn))
    except Exception:  # logged with its traceback
        log.exception("yjs connection from %s failed", ip)
        conn.out.close(CLOSE_INTERNAL, "internal error")
    try:
        await receive_pump(websocket, conn, f"yjs connection from {ip}", relay.config.limits.first_message_timeout)
    finally:
        relay.end_session(conn)
        await conn.out.wait_closed()


__all__ = ["EditEvents", "YjsConnection", "YjsService", "yjs_endpoint"]
