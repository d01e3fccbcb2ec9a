"""The y-websocket endpoint ``/yjs/{name}``: feed ``doc/{name}`` for unmodified Yjs clients.

Every document with Yjs clients on this relay process has one :class:`Room`, which is an
ordinary subscriber of the feed (``relay.core.feeds``): it turns the records of ``doc.update``
events into Yjs update messages (the records of one event-loop turn merged into one message)
and the feed's participants (native agents) into awareness states. Each WebSocket is a
:class:`YjsConnection`; the y-protocol itself (parsing, limits, awareness rules) is the
sans-I/O :mod:`relay.endpoints.yjs_protocol`.

Yjs clients are anonymous: they read (any feed that is not ``members``-only) and their
edits are dropped with y-protocols' permission-denied message, unless they present a
capability token (``collab.capability``) from the feed's owner in the ``token`` query
parameter. With a write capability their edits are recorded as ``doc.update`` events signed
by the relay whose body carries the capability. ``docs/protocol.md`` section 21 is normative.
"""
from __future__ import annotations

import asyncio
import colorsys
import hashlib
import json
import logging
import time
import unicodedata
from collections import deque
from typing import Any

from pycrdt import get_update, merge_updates
from starlette.websockets import WebSocket, WebSocketDisconnect

from collab.access import CONTROL_KINDS
from collab.capability import Capability
from collab.errors import ColonyError, InvalidEvent, Unauthorized
from collab.events import HEX64_RE, Event, b64, check_feed, now_ms, unb64

from relay.core.feeds import FeedRuntime
from relay.endpoints.ws import await_peer_close
from relay.endpoints.wsdirect import DirectWriter, binary_frame
from relay.server import Relay
from relay.endpoints.yjs_awareness import AGENT, AwarenessRoom
from relay.endpoints.yjs_protocol import (
    CLOSE_BAD_TOKEN, CLOSE_FORBIDDEN, CLOSE_INTERNAL, CLOSE_MALFORMED, CLOSE_SLOW, CLOSE_TOO_BIG,
    CLOSE_TRY_LATER, CLOSE_UNSUPPORTED, AwarenessChange, AwarenessEntry, AwarenessQuery, Close,
    Denied, Dropped, SyncRequest, Write, YjsPeer, YProtocolError, awareness_message, delete_set, deletes_covered,
    permission_denied, struct_groups, sync_step1, sync_step2, sync_update, update_budget,
)

log = logging.getLogger(__name__)

READ_ONLY = ("read-only: this relay records edits from Yjs clients only with a write capability "
             "(connect with ?token=<colony grant FEED --write>)")
EXPIRED = "the write capability has expired: edits are no longer recorded"
DENIED_EVERY = 1.0      # seconds between two permission-denied messages to one connection
LOG_EVERY = 10.0        # seconds between two log lines for the same reason and connection
MAX_NAME = 64
PROFILE_SCAN = 1000     # records of an agent/<key> feed searched (newest first) for its profile


# -- agents as awareness states --------------------------------------------------------------
def agent_client_id(key: str) -> int:
    """The awareness client id (uint32, like Yjs clientIDs) of an agent's presence."""
    return int.from_bytes(hashlib.sha256(b"colony/awareness\n" + key.encode()).digest()[:4], "big")


def agent_color(key: str) -> str:
    hue = int(key[:8], 16) % 360
    r, g, b = colorsys.hls_to_rgb(hue / 360, 0.45, 0.65)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def agent_state(key: str, name: str | None) -> str:
    color = agent_color(key)
    state = {"user": {"name": name or key[:8], "color": color, "colorLight": color + "33"}, AGENT: key}
    return json.dumps(state, ensure_ascii=False, separators=(",", ":"))


def clean_name(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C").strip()
    return text[:MAX_NAME] or None


# -- outgoing messages -----------------------------------------------------------------------
class BinaryOutbox:
    """Bounded queue of outgoing binary messages with one writer task (cf. session.Outbox)."""

    def __init__(self, websocket: WebSocket, max_messages: int) -> None:
        self.ws, self.max_messages = websocket, max_messages
        self.direct = DirectWriter.of(websocket)
        self._sending = False  # a message popped from the queue is being sent (maybe paused)
        self.messages: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.close_code: int | None = None
        self._reason = ""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="yjs-outbox")

    def put(self, msg: bytes) -> bool:
        if self.closed:
            return False
        if len(self.messages) >= self.max_messages:
            self.close(CLOSE_SLOW, "slow consumer: reconnect")
            return False
        self.messages.append(msg)
        self._ready.set()
        return True

    def put_framed(self, msg: bytes, frame: bytes) -> bool:
        """Like ``put``; ``frame`` is ``msg`` already framed, written straight to the socket when
        nothing is queued ahead of it (order is kept) and the transport takes it (relay.endpoints.wsdirect)."""
        if (not self.messages and not self._sending and not self.closed and self.direct is not None
                and self.direct.write(frame)):
            return True
        return self.put(msg)

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed, self.close_code, self._reason = True, code, reason
        self._ready.set()

    async def _run(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self.messages and not (self.closed and self.close_code not in (1000, 1001)):
                    self._sending = True
                    await self.ws.send_bytes(self.messages.popleft())
                    self._sending = False
                if self.closed:
                    self.messages.clear()
                    await self.ws.close(self.close_code or 1000, self._reason[:120])
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # the peer went away mid-send
            log.debug("yjs outbox send failed", exc_info=True)
            self.closed = True
            self.messages.clear()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        self.close(code, reason)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 2)
        except (TimeoutError, Exception):
            self._task.cancel()  # the backlog did not drain in time: drop it, but still say why
            if self.direct is not None and self.close_code is not None:
                self.direct.force_close(self.close_code, self._reason[:120])


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
        self.out = BinaryOutbox(websocket, self.config.limits.max_outbound_frames)
        self.room: Room | None = None
        self._writes: deque[bytes] = deque()
        self._write_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._denied_at = float("-inf")
        self._logged: dict[str, float] = {}
        self._expiry: asyncio.TimerHandle | None = None
        self._budget = 0
        if cap is not None:
            overhead = Event.create(relay.hub.relay_key, self.feed, "doc.update",
                                    {"update": "", "cap": cap.to_wire()}, ctx=2**53 - 1, ts=2**53 - 1).size
            self._budget = update_budget(self.config.limits.max_event_bytes, overhead)
            self._watch_expiry()

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
        self.out.put(msg)

    def closed(self) -> None:
        """The socket is gone (called by Relay.end_session). Queued edits are still recorded."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self.room is not None:
            self.room.leave(self)
            self.room = None
        self.out.close(1000, "closed")

    def _watch_expiry(self) -> None:
        assert self.cap is not None
        delay = (self.cap.exp - now_ms()) / 1000
        if delay > 0:  # (in steps: event loops cap long timers)
            self._expiry = asyncio.get_running_loop().call_later(min(delay, 86_400.0), self._watch_expiry)
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

    def _deny(self, update: bytes, initial: bool) -> None:
        room = self.room
        if initial and room is not None and room.novel(update) is None:
            return  # a reconnecting client's state that the relay already has
        expired = self.cap is not None and self.cap.allows("write")
        self.note("dropped an edit: " + ("capability expired" if expired else "read-only connection"))
        now = time.monotonic()
        if now - self._denied_at >= DENIED_EVERY:
            self._denied_at = now
            self.send(permission_denied(EXPIRED if expired else READ_ONLY))

    def _write(self, update: bytes, initial: bool) -> None:
        assert self.cap is not None and self.room is not None
        if initial:
            novel = self.room.novel(update)
            if novel is None:
                return
            update = novel
        if now_ms() >= self.cap.exp:
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
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name=f"yjs-write:{self.feed}")

    async def _write_loop(self) -> None:
        """Record queued edits, one event at a time; what arrives meanwhile is merged into the
        next event (at most one event of this connection in flight)."""
        relay = self.service.relay
        key = relay.hub.relay_key
        assert self.cap is not None
        cap = self.cap.to_wire()
        while self._writes:
            chunk = [self._writes.popleft()]
            size = len(chunk[0])
            while self._writes and size + len(self._writes[0]) <= self._budget:
                size += len(self._writes[0])
                chunk.append(self._writes.popleft())
            self._write_bytes -= size
            update = chunk[0]
            if len(chunk) > 1:
                merged = merge_updates(*chunk)
                if len(merged) <= self._budget:
                    update = merged
                else:  # merging grew it past the budget (rare): record the pieces one by one
                    self._writes.extendleft(reversed(chunk[1:]))
                    self._write_bytes += size - len(chunk[0])
            while not relay.ip_limiter.allow(self.ip):
                await asyncio.sleep(0.05)
            try:
                rt = relay.hub.feeds.get(self.feed) or await relay.hub.runtime(self.feed)
                ev = Event.create(key, self.feed, "doc.update", {"update": b64(update), "cap": cap}, ctx=rt.seq)
                if relay.hub.remote(self.feed):  # another relay of the federation homes it
                    await relay.hub.publish(ev, key.public_hex)
                else:
                    await rt.publish(ev, key.public_hex)
            except Unauthorized as exc:  # e.g. the capability expired before the event was made
                log.info("yjs edit to %s refused: %s", self.feed, exc)
                self.peer.writable = False
                self._writes.clear()
                self._write_bytes = 0
                self.send(permission_denied(f"edit refused: {exc}"))
                return
            except Exception as exc:
                log.warning("recording a yjs edit to %s failed: %r", self.feed, exc)
                self._writes.clear()
                self._write_bytes = 0
                self.out.close(CLOSE_INTERNAL, "the relay could not record an edit; reconnect to resync")
                return


# -- one document ----------------------------------------------------------------------------
class Room:
    """The Yjs clients of one document on this relay process; a subscriber of its feed."""

    key: str | None = None   # anonymous: never a participant of the feed
    reads_any = True         # the room checks each client's right to read itself

    def __init__(self, service: YjsService, rt: FeedRuntime) -> None:
        self.service, self.rt, self.feed = service, rt, rt.feed
        self.limits = service.relay.config.yjs
        self.conns: set[YjsConnection] = set()
        self.aw = AwarenessRoom(self.limits)
        self.agents: dict[str, int] = {}   # present agents' keys -> awareness client ids
        self.closed = False
        self._updates: list[bytes] = []
        self._flush: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        fut = self.rt.subscribe(self, self.rt.seq)  # the clients' sync covers what came before
        fut.add_done_callback(self._subscribed)
        self._ticker = loop.create_task(self._tick(), name=f"yjs-room:{self.feed}")

    def _subscribed(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("yjs room of %s could not subscribe: %r", self.feed, fut.exception())
            self.fail(CLOSE_INTERNAL, "the relay could not open this document; reconnect")

    def join(self, conn: YjsConnection) -> None:
        self.conns.add(conn)

    def leave(self, conn: YjsConnection) -> None:
        self.conns.discard(conn)
        gone = self.aw.drop(conn)
        if gone:
            self.broadcast(awareness_message(gone))
        if not self.conns:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.rt.unsubscribe(self)
        if self.service.rooms.get(self.feed) is self:
            del self.service.rooms[self.feed]
        for task in [*self._tasks, self._ticker]:
            if task is not None:
                task.cancel()
        if self._flush is not None:
            self._flush.cancel()

    def fail(self, code: int, reason: str) -> None:
        for conn in list(self.conns):
            conn.out.close(code, reason)
        self.close()

    def broadcast(self, msg: bytes) -> None:
        frame = binary_frame(msg)  # the same bytes for every client: frame once
        for conn in list(self.conns):
            conn.out.put_framed(msg, frame)

    # -- document ----------------------------------------------------------------------------
    def diff(self, state_vector: bytes) -> bytes:
        """What the document has beyond ``state_vector`` (sync step 2)."""
        state = self.rt.state
        try:
            update = state.doc.get_update(state_vector)
        except Exception as exc:
            raise YProtocolError("the state vector does not decode") from exc
        pending = getattr(state, "pending", None)  # updates not integrated yet (out of causal order)
        return merge_updates(update, *pending) if pending else update

    def novel(self, update: bytes) -> bytes | None:
        """The part of a client's update the document lacks (None: nothing), e.g. the sync
        step 2 of a client that reconnects: its deletions are all there already."""
        ydoc = self.rt.state.doc
        sv = ydoc.get_state()
        try:
            rest = get_update(update, sv)
            if struct_groups(rest):
                return rest
            deletes = delete_set(rest)
            if not deletes:
                return None
            have = delete_set(get_update(ydoc.get_update(), sv))
        except Exception:  # cannot tell: treat it as new (recording an old edit again is harmless)
            return update
        return None if deletes_covered(deletes, have) else rest

    # -- Subscriber (frames from the feed) ---------------------------------------------------
    def deliver(self, frame: str) -> None:
        if self.closed:
            return
        try:
            d = json.loads(frame)
            t = d.get("t")
            if t == "rec":
                ev = d["rec"]["event"]
                if ev["kind"] == "doc.update":
                    self._queue(unb64(ev["body"]["update"]))
                elif ev["kind"] in CONTROL_KINDS:
                    self._recheck_readers()
            elif t == "snapshot":
                state = unb64(d["snap"]["state"])
                if state:
                    self._queue(state)
            elif t == "presence":
                self._presence(d.get("op"), [k for k in d.get("keys", ()) if isinstance(k, str) and HEX64_RE.match(k)])
            elif t == "unsubbed":
                self.fail(CLOSE_INTERNAL, "the relay stopped serving this document; reconnect")
        except Exception:
            log.exception("yjs room of %s could not handle a frame", self.feed)

    async def deliver_wait(self, frame: str) -> None:
        self.deliver(frame)

    def _queue(self, update: bytes) -> None:
        self._updates.append(update)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._send_updates)

    def _send_updates(self) -> None:
        """Everything recorded during one event-loop turn goes out as one update message."""
        self._flush = None
        updates, self._updates = self._updates, []
        if not updates:
            return
        try:
            merged = [merge_updates(*updates)] if len(updates) > 1 else updates
        except Exception:  # one of them does not merge: send them as they are
            merged = updates
        for update in merged:
            self.broadcast(sync_update(update))

    def _recheck_readers(self) -> None:
        """After a control event: a feed that turned members-only keeps only capability holders."""
        if self.rt.access.can_read(None):
            return
        for conn in list(self.conns):
            if conn.cap is None:
                conn.out.close(CLOSE_FORBIDDEN, "this document is members-only: connect with a capability token")

    # -- awareness ---------------------------------------------------------------------------
    def awareness(self, conn: YjsConnection, entries: list[AwarenessEntry]) -> None:
        changed, refused = self.aw.apply(conn, entries, time.time() * 1000)
        for reason in set(refused):
            conn.note("awareness entry dropped: " + reason)
        if changed:
            self.broadcast(awareness_message(changed))

    def _presence(self, op: Any, keys: list[str]) -> None:
        if op == "list":
            add, gone = set(keys) - set(self.agents), set(self.agents) - set(keys)
        elif op == "join":
            add, gone = set(keys) - set(self.agents), set()
        elif op == "leave":
            add, gone = set(), set(keys) & set(self.agents)
        else:
            return
        removed = []
        for key in sorted(gone):
            entry = self.aw.remove_agent(self.agents.pop(key))
            if entry is not None:
                removed.append(entry)
        if removed:
            self.broadcast(awareness_message(removed))
        for key in sorted(add):
            self.agents[key] = agent_client_id(key)
            self._spawn(self._announce([key]))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self, keys: list[str], max_age: float = 0.0) -> None:
        """Look the agents' names up, then (re)announce their states."""
        entries = []
        for key in keys:
            name = await self.service.agent_name(key, max_age)
            if key in self.agents and not self.closed:
                entry = self.aw.set_agent(self.agents[key], agent_state(key, name), time.time() * 1000)
                if entry is not None:
                    entries.append(entry)
        if entries:
            self.broadcast(awareness_message(entries))

    async def _tick(self) -> None:
        """Expire clients that stopped renewing their state; renew the agents' states (Yjs
        clients drop a state that was not renewed for 30 s)."""
        period = max(0.05, min(self.limits.awareness_timeout / 10, self.limits.agent_renew))
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(period)
            try:
                gone = self.aw.expire(time.time() * 1000)
                if gone:
                    self.broadcast(awareness_message(gone))
                if loop.time() - renewed >= self.limits.agent_renew:
                    renewed = loop.time()
                    if self.agents:  # names: a profile written on another process shows within a minute
                        await self._announce(sorted(self.agents), max_age=60.0)
            except Exception:
                log.exception("yjs room of %s: awareness upkeep failed", self.feed)


# -- the endpoint ----------------------------------------------------------------------------
class YjsService:
    """The rooms of one running relay, and the agents' names for their awareness states."""

    def __init__(self, relay: Relay) -> None:
        self.relay, self.hub = relay, relay.hub
        self.rooms: dict[str, Room] = {}
        self.names: dict[str, tuple[str | None, float]] = {}  # key -> (name, when looked up)
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

    # agents' names ----------------------------------------------------------------------
    async def agent_name(self, key: str, max_age: float = 0.0) -> str | None:
        """The name in the latest ``agent.profile`` the agent itself wrote to ``agent/<key>``
        (looked up again when the cached one is older than ``max_age`` seconds)."""
        cached = self.names.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[1] <= max_age:
            return cached[0]
        try:
            self.names[key] = (await self._profile_name(key), now)
        except Exception as exc:  # storage trouble: keep what we knew
            log.debug("profile of %s not read: %r", key[:12], exc)
        return self.names.get(key, (None, 0.0))[0]

    async def _profile_name(self, key: str) -> str | None:
        storage = self.hub.storage
        feed = f"agent/{key}"
        head = await storage.head(feed)
        if head is None:
            return None
        end, page = head.seq, 100
        while end > 0 and head.seq - end < PROFILE_SCAN:
            start = max(0, end - page)
            rows = await storage.read(feed, start, end - start)
            for row in reversed(rows):
                ev = json.loads(row.data)["event"]
                if ev["kind"] == "agent.profile" and ev["author"] == key and isinstance(ev["body"], dict):
                    return clean_name(ev["body"].get("name"))
            end = start
        return None

    def _on_record(self, rec: Any, _rjson: str) -> None:
        ev = rec.event
        if ev.kind != "agent.profile" or rec.feed != f"agent/{ev.author}" or not isinstance(ev.body, dict):
            return
        self.names[ev.author] = (clean_name(ev.body.get("name")), time.monotonic())
        for room in list(self.rooms.values()):
            if ev.author in room.agents:
                room._spawn(room._announce([ev.author]))


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    log.info("yjs connection refused (%d): %s", code, reason)
    await websocket.close(code, reason[:120])


async def yjs_endpoint(websocket: WebSocket) -> None:
    relay: Relay = websocket.app.state.relay
    if relay.closing:
        await websocket.close(1001)
        return
    await websocket.accept()  # refusals below then carry a close code and a reason
    ip = websocket.client.host if websocket.client else "unknown"
    try:
        feed = check_feed("doc/" + websocket.path_params.get("name", ""))
    except InvalidEvent as exc:
        await _refuse(websocket, CLOSE_MALFORMED, f"invalid document name: {exc}")
        return
    try:
        rt = await relay.hub.runtime(feed)
    except Exception:
        log.exception("loading %s for a yjs client failed", feed)
        await _refuse(websocket, CLOSE_INTERNAL, "the relay could not open this document")
        return
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
    relay.sessions.add(conn)  # type: ignore[arg-type]  # counted in /health, closed at shutdown
    try:
        conn.start(await service.join(conn))
        while not conn.out.closed:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("bytes")
            if data is None:
                conn.out.close(CLOSE_UNSUPPORTED, "y-protocol messages are binary")
                break
            conn.handle(data)
        else:
            await conn.out.wait_closed()  # our close frame is out: wait for the client's answer
            await await_peer_close(websocket)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("yjs connection from %s failed", ip)
        conn.out.close(CLOSE_INTERNAL, "internal error")
    finally:
        relay.end_session(conn)  # type: ignore[arg-type]
        await conn.out.wait_closed()


__all__ = ["yjs_endpoint", "YjsService", "Room", "YjsConnection", "agent_client_id", "agent_state"]
