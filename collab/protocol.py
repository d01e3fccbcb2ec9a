"""Sans-I/O client side of the native protocol: frame texts in, verified events out.

:class:`ClientProtocol` owns no socket and no event loop, so it can be tested with plain
strings and reused by any transport. It builds outgoing frames and turns received frames
into small dataclasses *after* checking them: every record's author signature, id and relay
receipt (:meth:`Record.from_wire`), and the hash chain of every tracked feed. A record at or
below the last seen seq is a harmless duplicate and is dropped; anything that skips a seq or
links to another head raises :class:`ChainError`, because silently accepting it would let a
relay rewrite history under the agent.

Errors raised for one feed's frame (bad record, bad chain, bad snapshot) carry that feed in
a ``feed`` attribute so a client can fail just that subscription.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import frames
from .errors import ChainError, ColonyError, InvalidEvent, MalformedFrame, ProtocolError
from .events import (
    GENESIS, HEX64_RE, KIND_RE, Event, Record, Snapshot, check_feed, check_prefix, hello_bytes,
)
from .feedcore_chain import link
from .keys import Keypair


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: str
    relay: str


@dataclass(frozen=True, slots=True)
class Welcome:
    key: str


@dataclass(frozen=True, slots=True)
class Ack:
    """The relay durably stored an event (``dup``: it had stored it before, at ``seq``)."""

    id: str
    seq: int
    dup: bool = False
    feed: str = ""
    rid: Any = None


@dataclass(frozen=True, slots=True)
class ErrorReply:
    code: str
    message: str
    rid: Any = None
    feed: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordReceived:
    feed: str
    record: Record


@dataclass(frozen=True, slots=True)
class SnapshotReceived:
    feed: str
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class Synced:
    feed: str
    seq: int
    head: str


@dataclass(frozen=True, slots=True)
class Presence:
    feed: str
    op: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsubbed:
    feed: str
    reason: str | None = None
    rid: Any = None


@dataclass(frozen=True, slots=True)
class Pong:
    rid: Any = None


@dataclass(frozen=True, slots=True)
class Announce:
    """A record was stored in a feed whose id starts with a prefix we watch (docs/protocol.md
    9.6): its feed, seq, record hash (the feed's new head), event kind and relay time. Not
    verified (it carries no signature): subscribe to the feed, or read it, for the record."""

    feed: str
    seq: int
    head: str
    kind: str
    rtime: int

    @classmethod
    def from_wire(cls, f: dict[str, Any]) -> Announce:
        """Check an announcement's members (a ``announce`` frame, or an SSE ``/watch`` event's data)."""
        feed, seq, head, kind, rtime = f.get("feed"), f.get("seq"), f.get("head"), f.get("kind"), f.get("rtime")
        try:
            feed = check_feed(feed)
        except InvalidEvent as exc:
            raise MalformedFrame(f"announce needs a feed id: {exc}") from exc
        if not (isinstance(seq, int) and _is_int(seq) and seq >= 1 and isinstance(rtime, int) and _is_int(rtime)
                and rtime >= 0):
            raise MalformedFrame("announce needs a positive seq and a non-negative rtime")
        if not (isinstance(head, str) and HEX64_RE.match(head) and isinstance(kind, str) and KIND_RE.match(kind)):
            raise MalformedFrame("announce needs head (64 hex) and a kind")
        return cls(feed, seq, head, kind, rtime)


@dataclass(frozen=True, slots=True)
class Watching:
    """The relay accepted ``watch {prefix}``: announcements of it follow."""

    prefix: str
    rid: Any = None


@dataclass(frozen=True, slots=True)
class Unwatched:
    """The relay ended a watch (``unwatch {prefix}`` answered)."""

    prefix: str
    rid: Any = None


ProtocolEvent = (
    Challenge | Welcome | Ack | ErrorReply | RecordReceived | SnapshotReceived | Synced | Presence | Unsubbed | Pong
    | Announce | Watching | Unwatched
)


@dataclass(slots=True)
class Cursor:
    """What we know of one feed: the last seq seen and its record hash (None: unknown)."""

    seq: int = 0
    head: str | None = GENESIS
    synced: bool = False


@dataclass(slots=True)
class ClientProtocol:
    """Protocol state of one client across connections (feed cursors survive reconnects)."""

    key: Keypair | None = None
    relay_key: str | None = None
    nonce: str | None = None
    relay: str | None = None
    authenticated: bool = False
    cursors: dict[str, Cursor] = field(default_factory=dict)
    duplicates: int = 0  # records dropped because they were at or below the cursor
    #: feed -> our unsubs the relay has not answered yet: its frames for the feed until then belong
    #: to the subscription that ended, even when the feed was subscribed again meanwhile
    draining: dict[str, int] = field(default_factory=dict)

    # -- connection lifecycle -------------------------------------------------------------
    def connection_lost(self) -> None:
        """Forget per-connection state; cursors stay so subscriptions resume by seq."""
        self.nonce = None
        self.authenticated = False
        self.draining.clear()  # a new connection has nothing in flight
        for cur in self.cursors.values():
            cur.synced = False

    # -- feed tracking --------------------------------------------------------------------
    def track(self, feed: str, since: int = 0, head: str | None = None) -> Cursor:
        """Start verifying ``feed`` from ``since`` (head known only from genesis or if given)."""
        check_feed(feed)
        if since < 0:
            raise InvalidEvent("since must be >= 0")
        cur = Cursor(since, GENESIS if since == 0 else head)
        self.cursors[feed] = cur
        return cur

    def forget(self, feed: str) -> Cursor | None:
        return self.cursors.pop(feed, None)

    def seq(self, feed: str) -> int:
        cur = self.cursors.get(feed)
        return cur.seq if cur else 0

    # -- outgoing frames ------------------------------------------------------------------
    def hello(self, rid: Any = None) -> str:
        if self.key is None:
            raise ProtocolError("no key to authenticate with")
        if self.nonce is None or self.relay is None:
            raise ProtocolError("hello needs the relay's challenge first")
        sig = self.key.sign(hello_bytes(self.key.public_hex, self.nonce, self.relay)).hex()
        return frames.encode(frames.with_rid({"t": "hello", "key": self.key.public_hex, "sig": sig}, rid))

    def sub(self, feed: str, since: int | None = None, rid: Any = None) -> str:
        """Subscribe frame; ``since`` defaults to the tracked cursor (tracking starts if new)."""
        cur = self.cursors.get(feed)
        if cur is None or (since is not None and since != cur.seq):
            cur = self.track(feed, since or 0)
        cur.synced = False
        return frames.encode(frames.with_rid({"t": "sub", "feed": feed, "since": cur.seq}, rid))

    def unsub(self, feed: str, rid: Any = None) -> str:
        self.forget(feed)
        self.draining[check_feed(feed)] = self.draining.get(feed, 0) + 1
        return frames.encode(frames.with_rid({"t": "unsub", "feed": check_feed(feed)}, rid))

    def pub(self, event: Event, rid: Any = None) -> str:
        return frames.encode(frames.with_rid({"t": "pub", "event": event.to_wire()}, rid))

    def ping(self, rid: Any = None) -> str:
        return frames.encode(frames.with_rid({"t": "ping"}, rid))

    def watch(self, prefix: str, rid: Any = None) -> str:
        return frames.encode(frames.with_rid({"t": "watch", "prefix": check_prefix(prefix)}, rid))

    def unwatch(self, prefix: str, rid: Any = None) -> str:
        return frames.encode(frames.with_rid({"t": "unwatch", "prefix": check_prefix(prefix)}, rid))

    # -- incoming frames ------------------------------------------------------------------
    def receive(self, message: str | bytes) -> list[ProtocolEvent]:
        """Parse a whole message (a batch). Raises on the first bad frame; see receive_frame."""
        out: list[ProtocolEvent] = []
        for text in frames.split(message):
            ev = self.receive_frame(text)
            if ev is not None:
                out.append(ev)
        return out

    def receive_frame(self, text: str) -> ProtocolEvent | None:
        """One frame -> one event, or None when it needs no action (duplicate, untracked feed)."""
        f = frames.parse(text, None)
        t = f["t"]
        if t not in frames.RELAY_FRAMES:
            return None  # a newer relay may send types we do not know (docs/protocol.md, section 17)
        if t in ("rec", "snapshot", "synced"):
            feed = _str(f, "feed")
            try:
                return self._feed_frame(t, feed, f)
            except ColonyError as exc:
                exc.concerns(feed)
                raise
        if t == "ok":
            seq = f.get("seq")
            if not isinstance(seq, int) or seq < 1:
                raise MalformedFrame("ok frame needs a positive seq")
            return Ack(_str(f, "id"), seq, bool(f.get("dup", False)), _str(f, "feed"), f.get("rid"))
        if t == "error":
            return ErrorReply(_str(f, "code"), str(f.get("message", "")), f.get("rid"),
                              _opt_str(f, "feed"), _opt_str(f, "id"))
        if t == "presence":
            keys = f.get("keys")
            if f.get("op") not in ("list", "join", "leave") or not isinstance(keys, list):
                raise MalformedFrame("presence frame needs op list|join|leave and keys")
            return Presence(_str(f, "feed"), f["op"], tuple(str(k) for k in keys))
        if t == "challenge":
            nonce, relay = _str(f, "nonce"), _str(f, "relay")
            if self.relay_key is not None and relay != self.relay_key:
                raise ProtocolError(f"relay key {relay[:16]}… differs from the pinned {self.relay_key[:16]}…")
            self.nonce, self.relay, self.authenticated = nonce, relay, False
            return Challenge(nonce, relay)
        if t == "welcome":
            self.authenticated = True
            return Welcome(_str(f, "key"))
        if t == "unsubbed":
            feed, reason = _str(f, "feed"), _opt_str(f, "reason")
            left = self.draining.get(feed, 0) - 1
            if reason is None and left >= 0:  # the answer to an unsub of ours (the relay's own carry a reason)
                if left:
                    self.draining[feed] = left
                else:
                    del self.draining[feed]
            return Unsubbed(feed, reason, f.get("rid"))
        if t == "announce":
            return Announce.from_wire(f)
        if t == "watching":
            return Watching(_str(f, "prefix"), f.get("rid"))
        if t == "unwatched":
            return Unwatched(_str(f, "prefix"), f.get("rid"))
        return Pong(f.get("rid"))

    def _feed_frame(self, t: str, feed: str, f: dict[str, Any]) -> ProtocolEvent | None:
        cur = self.cursors.get(feed)
        if cur is None or self.draining.get(feed):
            return None  # in flight after an unsub: not ours any more (a new sub's frames follow its unsubbed)
        if t == "rec":
            rec = Record.from_wire(f.get("rec"))
            if rec.feed != feed:
                raise InvalidEvent(f"record of {rec.feed} delivered as {feed}")
            self._check_relay(rec.relay)
            how = link(cur.seq, cur.head, rec)
            if how == "old":
                self.duplicates += 1
                return None
            if how == "gap":
                raise ChainError(f"{feed}: gap, expected seq {cur.seq + 1} but got {rec.seq}")
            if how == "break":
                raise ChainError(f"{feed}: record {rec.seq} does not link to the previous record")
            cur.seq, cur.head = rec.seq, rec.hash
            return RecordReceived(feed, rec)
        if t == "snapshot":
            snap = Snapshot.from_wire(f.get("snap"))
            if snap.feed != feed:
                raise InvalidEvent(f"snapshot of {snap.feed} delivered as {feed}")
            self._check_relay(snap.relay)
            if snap.seq < cur.seq:
                return None  # older than what we hold
            if snap.seq == cur.seq and cur.head is not None and snap.head != cur.head:
                raise ChainError(f"{feed}: snapshot at {snap.seq} has a different head (fork)")
            cur.seq, cur.head = snap.seq, snap.head
            return SnapshotReceived(feed, snap)
        seq, head = f.get("seq"), f.get("head")
        if not isinstance(seq, int) or not isinstance(head, str):
            raise MalformedFrame("synced frame needs seq and head")
        if seq != cur.seq:
            raise ChainError(f"{feed}: relay says synced at {seq} but we hold {cur.seq}")
        if head and cur.head is not None and head != cur.head:
            raise ChainError(f"{feed}: relay head at {seq} differs from ours (fork)")
        if head and cur.head is None:
            cur.head = head
        cur.synced = True
        return Synced(feed, seq, head)

    def _check_relay(self, relay: str) -> None:
        if self.relay_key is not None and relay != self.relay_key:
            raise ProtocolError("record or snapshot sealed by a relay other than the pinned one")


def _str(f: dict[str, Any], name: str) -> str:
    v = f.get(name)
    if not isinstance(v, str):
        raise MalformedFrame(f"{f.get('t')} frame needs a string {name}")
    return v


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt_str(f: dict[str, Any], name: str) -> str | None:
    v = f.get(name)
    return v if isinstance(v, str) else None


__all__ = [
    "Ack", "Announce", "Challenge", "ClientProtocol", "Cursor", "ErrorReply", "Pong", "Presence", "ProtocolEvent",
    "RecordReceived", "SnapshotReceived", "Synced", "Unsubbed", "Unwatched", "Watching", "Welcome",
]

