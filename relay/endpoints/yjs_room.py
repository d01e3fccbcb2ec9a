"""One document's Yjs clients on this relay process: a :class:`Room` is a subscriber of the
feed ``doc/{name}`` (``relay.core.hub``) that turns the records of ``doc.update`` events into Yjs
update messages (the records of one event-loop turn merged into one message) for every
connection, and the feed's participants (native agents) into awareness states.
"""
from __future__ import annotations

import asyncio
import colorsys
import hashlib
import json
import logging
import time
import unicodedata
from typing import TYPE_CHECKING, Any

from pycrdt import get_update, merge_updates

from collab.access import CONTROL_KINDS
from collab.events import HEX64_RE, unb64
from collab.namespaces.doc import EnginePanic, is_panic
from relay.core.worker import FeedRuntime
from relay.core.wsframe import SharedText, binary_frame
from relay.endpoints.yjs_awareness import AGENT, AwarenessRoom
from relay.endpoints.yjs_protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    AwarenessEntry,
    YProtocolError,
    awareness_message,
    delete_set,
    deletes_covered,
    struct_groups,
    sync_update,
)

if TYPE_CHECKING:
    from relay.endpoints.yjs import YjsConnection, YjsService

log = logging.getLogger(__name__)

MAX_NAME = 64


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


# -- one document ----------------------------------------------------------------------------
class Room:
    """The Yjs clients of one document on this relay process; a subscriber of its feed."""

    key: str | None = None   # anonymous: never a participant of the feed
    reads_any = True         # the room checks each client's right to read itself
    records_only = False     # it starts from the doc's snapshot

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
        if self.closed:  # every client left before the subscription was served: end it now
            self.service.hub.unsubscribe(self, self.feed)
            return
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
        hub = self.service.hub
        if hub.feeds.get(self.feed) is self.rt:
            hub.unsubscribe(self, self.feed)  # an empty document is unloaded now
        else:
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
        try:  # pending parts (updates not integrated yet, out of causal order) merged in
            return self.rt.state.diff(state_vector)
        except EnginePanic:  # our document, not the peer's bytes (yjs.py closes with 1011, the worker recovers)
            raise
        except Exception as exc:
            raise YProtocolError("the state vector does not decode") from exc

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
            have = delete_set(ydoc.get_update(sv))  # the document's deletions, without encoding its content
        except BaseException as exc:  # cannot tell: treat it as new (recording an old edit again is harmless)
            if not isinstance(exc, Exception) and not is_panic(exc):
                raise
            log.debug("could not diff an update of %s against the document", self.feed, exc_info=True)
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
                if ev["kind"] == "doc.update" and d["rec"]["seq"] in self._quarantined():
                    return  # the Yjs engine fails on it: never merged here, never sent (docs/reliability.md)
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

    def deliver_shared(self, msg: SharedText) -> None:
        for frame in msg.parts:
            self.deliver(frame)

    def _quarantined(self) -> list[int]:
        return getattr(self.rt.state, "quarantined", None) or []

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
        except BaseException as exc:  # they do not merge (or yrs panics on it): send them as they are
            if not isinstance(exc, Exception) and not is_panic(exc):
                raise
            log.warning("updates of %s did not merge; sent one by one", self.feed, exc_info=True)
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

    def profile_changed(self, key: str) -> None:
        """Agent ``key`` wrote a new ``agent.profile``: re-announce its state if it is present here."""
        if key in self.agents:
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


__all__ = ["Room", "agent_client_id", "agent_color", "agent_state", "clean_name"]
