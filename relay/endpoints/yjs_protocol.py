"""The y-websocket wire protocol, sans I/O: bytes in, actions out.

Messages are what ``y-protocols`` (sync, awareness, auth) and ``y-websocket`` send over one
WebSocket, one message per binary WebSocket message, each starting with a varuint type:

  0 sync       varuint subtype: 0 step 1 (varbytes state vector), 1 step 2 (varbytes update),
               2 update (varbytes update)
  1 awareness  varbytes awareness update: varuint n, n x (varuint client, varuint clock,
               varstring state JSON, "null" to remove)
  2 auth       varuint 0 (permission denied) + varstring reason      (relay -> client only)
  3 query-awareness  (no payload): answered with every awareness state

varuint is lib0's unsigned LEB128 (7 bits a byte, low first; at most 53 bits); varbytes /
varstring are a varuint byte length then the bytes (a string as UTF-8).

:class:`YjsPeer` holds one connection's protocol state (its rights and rate limits) and
turns each received message into actions for the pump in ``relay.endpoints.yjs``, which owns the
document and the sockets. The awareness states of one document are
:class:`relay.endpoints.yjs_awareness.AwarenessRoom`.
``docs/protocol.md`` section 21 is the normative description.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


from collab import lib0
from collab.errors import ProtocolError
from collab.lib0 import Decoder, var_bytes, var_string, var_uint
from collab.namespaces import doc as doc_ns

from relay.core.limits import YjsLimits

MSG_SYNC = 0
MSG_AWARENESS = 1
MSG_AUTH = 2
MSG_QUERY_AWARENESS = 3
SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2
AUTH_PERMISSION_DENIED = 0

EMPTY_UPDATE = b"\x00\x00"   # an update with no structs and no deletions

# WebSocket close codes of the endpoint. y-websocket (3.x) does not reconnect after 4400-4499.
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003     # a text message: y-websocket speaks binary only
CLOSE_TOO_BIG = 1009         # a message or an edit over the limits
CLOSE_INTERNAL = 1011        # the relay could not record an edit: reconnect (and resync)
CLOSE_TRY_LATER = 1013       # the client writes faster than its edits can be recorded
CLOSE_SLOW = 4008            # slow consumer (as on /ws)
CLOSE_MALFORMED = 4400       # not the y-protocol: garbage, truncated, trailing bytes, bad update
CLOSE_BAD_TOKEN = 4401       # the capability token is refused (forged, expired, wrong feed, ...)
CLOSE_FORBIDDEN = 4403       # members-only document and no (valid) read capability


class YProtocolError(ProtocolError, ValueError):
    """The bytes are not a well-formed y-protocol message."""


# -- lib0 encoding (collab.lib0) -------------------------------------------------------------
class Reader(Decoder):
    """A strict lib0 decoder: truncation, overlong varuints and bad UTF-8 raise YProtocolError."""

    __slots__ = ()
    error = YProtocolError


# -- messages --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    payload: bytes  # the encoded awareness update (decode with decode_awareness)


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    type: int


Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | QueryAwareness | UnknownMessage


def parse_message(data: bytes) -> Message:
    """One client message; YProtocolError when it is malformed. Unknown types (and the auth
    type, which clients do not send) are returned as UnknownMessage, as y-websocket's
    server ignores them."""
    r = Reader(data)
    t = r.var_uint()
    msg: Message
    if t == MSG_SYNC:
        sub = r.var_uint()
        payload = r.var_bytes()
        if sub == SYNC_STEP1:
            read_state_vector(payload)
            msg = SyncStep1(payload)
        elif sub == SYNC_STEP2:
            msg = SyncStep2(payload)
        elif sub == SYNC_UPDATE:
            msg = SyncUpdate(payload)
        else:
            raise YProtocolError(f"unknown sync message type {sub}")
        r.expect_end("a sync message")
    elif t == MSG_AWARENESS:
        msg = AwarenessMessage(r.var_bytes())
        r.expect_end("an awareness message")
    elif t == MSG_QUERY_AWARENESS:
        msg = QueryAwareness()
        r.expect_end("a query-awareness message")
    else:
        msg = UnknownMessage(t)
    return msg


def sync_step1(state_vector: bytes) -> bytes:
    return bytes((MSG_SYNC, SYNC_STEP1)) + var_bytes(state_vector)


def sync_step2(update: bytes) -> bytes:
    return bytes((MSG_SYNC, SYNC_STEP2)) + var_bytes(update)


def sync_update(update: bytes) -> bytes:
    return bytes((MSG_SYNC, SYNC_UPDATE)) + var_bytes(update)


def permission_denied(reason: str) -> bytes:
    """y-protocols/auth ``writePermissionDenied``: type 2, 0, varstring reason."""
    return bytes((MSG_AUTH, AUTH_PERMISSION_DENIED)) + var_string(reason)


def query_awareness() -> bytes:
    return bytes((MSG_QUERY_AWARENESS,))


# -- Yjs updates -----------------------------------------------------------------------------
def read_state_vector(sv: bytes) -> dict[int, int]:
    return lib0.read_state_vector(sv, Reader)


def is_empty_update(update: bytes) -> bool:
    """No structs and no deletions (what an empty Y.Doc sends as its sync step 2): the one rule
    of docs/protocol.md 16.1, which ``doc.update`` events refuse and /yjs ignores."""
    return doc_ns.is_empty_update(update)


def struct_groups(update: bytes) -> int:
    return Reader(update).var_uint()


def delete_set(update: bytes) -> dict[int, list[tuple[int, int]]]:
    """client -> merged sorted (clock, length) ranges, of an update that holds no structs."""
    r = Reader(update)
    if r.var_uint():
        raise YProtocolError("the update holds structs")
    out: dict[int, list[tuple[int, int]]] = {}
    for _ in range(r.var_uint()):
        client = r.var_uint()
        ranges = out.setdefault(client, [])
        for _ in range(r.var_uint()):
            ranges.append((r.var_uint(), r.var_uint()))
    return {c: merge_ranges(rs) for c, rs in out.items() if rs}


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(clock, length)`` ranges sorted, overlapping and touching ones joined."""
    merged: list[tuple[int, int]] = []
    for clock, length in sorted(ranges):
        if merged and clock <= merged[-1][0] + merged[-1][1]:
            start, ln = merged[-1]
            merged[-1] = (start, max(ln, clock + length - start))
        else:
            merged.append((clock, length))
    return merged


def deletes_covered(inner: dict[int, list[tuple[int, int]]], outer: dict[int, list[tuple[int, int]]]) -> bool:
    """Every range of ``inner`` lies inside a range of ``outer`` (both merged, as delete_set gives)."""
    for client, ranges in inner.items():
        have = outer.get(client, [])
        for clock, length in ranges:
            if length and not any(s <= clock and clock + length <= s + ln for s, ln in have):
                return False
    return True


# -- awareness -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client: int
    clock: int
    state: str  # JSON text as sent ("null": the client left)

    @property
    def removed(self) -> bool:
        return self.state == "null"


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    r = Reader(payload)
    n = r.var_uint()
    if n > len(payload):  # each entry takes at least 3 bytes: a bogus count, not a big update
        raise YProtocolError("awareness update announces more entries than it can hold")
    out = [AwarenessEntry(r.var_uint(), r.var_uint(), r.var_string()) for _ in range(n)]
    r.expect_end("an awareness update")
    return out


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    parts = [var_uint(len(entries))]
    for e in entries:
        parts += (var_uint(e.client), var_uint(e.clock), var_string(e.state))
    return b"".join(parts)


def awareness_message(entries: list[AwarenessEntry]) -> bytes:
    return bytes((MSG_AWARENESS,)) + var_bytes(encode_awareness(entries))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_state(text: str) -> dict[str, Any] | None:
    """An awareness state: a JSON object, or null. Raise YProtocolError otherwise."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise YProtocolError("an awareness state is not JSON") from exc
    if value is not None and not isinstance(value, dict):
        raise YProtocolError("an awareness state must be a JSON object or null")
    return value


# -- one connection --------------------------------------------------------------------------
class Bucket:
    """Token bucket on an explicit clock (seconds)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, float(burst), float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Answer with sync step 2: what the document has beyond ``state_vector``."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class Write:
    """A writable client's edit (``initial``: its sync step 2, often nothing new)."""

    update: bytes
    initial: bool


@dataclass(frozen=True, slots=True)
class Denied:
    """A read-only client's edit: dropped; tell it (``initial``: only if it brings something new)."""

    update: bytes
    initial: bool


@dataclass(frozen=True, slots=True)
class AwarenessChange:
    entries: list[AwarenessEntry]


@dataclass(frozen=True, slots=True)
class AwarenessQuery:
    pass


@dataclass(frozen=True, slots=True)
class Dropped:
    """The message was ignored (rate or size limit, unknown type); log it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


Action = SyncRequest | Write | Denied | AwarenessChange | AwarenessQuery | Dropped | Close


class YjsPeer:
    """Protocol state of one Yjs connection: bytes in -> actions out.

    ``writable`` says whether its edits are recorded (a write capability); the pump may
    revoke it (the capability expired).
    """

    def __init__(self, limits: YjsLimits, max_message_bytes: int, writable: bool, now: float) -> None:
        self.limits, self.max_message_bytes, self.writable = limits, max_message_bytes, writable
        self.awareness_bucket = Bucket(limits.awareness_per_sec, limits.awareness_burst, now)
        self.sync_bucket = Bucket(limits.sync_requests_per_sec, limits.sync_requests_burst, now)

    def receive(self, data: bytes, now: float) -> list[Action]:
        """Handle one binary WebSocket message (``now`` in seconds, any monotonic clock)."""
        if len(data) > self.max_message_bytes:
            return [Close(CLOSE_TOO_BIG, f"message of {len(data)} bytes; the limit is {self.max_message_bytes}")]
        try:
            msg = parse_message(data)
            return self._handle(msg, now)
        except YProtocolError as exc:
            return [Close(CLOSE_MALFORMED, f"malformed y-protocol message: {exc}")]

    def _handle(self, msg: Message, now: float) -> list[Action]:
        if isinstance(msg, SyncStep1):
            if not self.sync_bucket.take(now):
                return [Dropped("too many sync step 1 requests")]
            return [SyncRequest(msg.state_vector)]
        if isinstance(msg, (SyncStep2, SyncUpdate)):
            # no engine here: the connection has the update vetted in the Yjs sandbox first
            if is_empty_update(msg.update):
                return []
            initial = isinstance(msg, SyncStep2)
            return [Write(msg.update, initial) if self.writable else Denied(msg.update, initial)]
        if isinstance(msg, AwarenessMessage):
            if len(msg.payload) > self.limits.max_awareness_bytes:
                return [Dropped(f"awareness update of {len(msg.payload)} bytes; the limit is "
                                f"{self.limits.max_awareness_bytes}")]
            if not self.awareness_bucket.take(now):
                return [Dropped("too many awareness updates")]
            entries = decode_awareness(msg.payload)
            for e in entries:  # malformed JSON is a protocol error; limits are checked by the room
                if len(e.state) <= self.limits.max_awareness_state_bytes:
                    parse_state(e.state)
            return [AwarenessChange(entries)] if entries else []
        if isinstance(msg, QueryAwareness):
            if not self.awareness_bucket.take(now):
                return [Dropped("too many awareness queries")]
            return [AwarenessQuery()]
        return [Dropped(f"unknown message type {msg.type}")]


def update_budget(max_event_bytes: int, overhead: int) -> int:
    """Largest update (raw bytes) whose base64 still fits an event with ``overhead`` bytes
    of everything else."""
    room = max_event_bytes - overhead
    return max(0, math.floor(room / 4) * 3 - 2)


__all__ = [
    "AwarenessChange", "AwarenessEntry", "AwarenessQuery", "Close", "Denied", "Dropped", "Reader", "SyncRequest",
    "Write", "YProtocolError", "YjsPeer", "awareness_message", "decode_awareness", "delete_set",
    "deletes_covered", "encode_awareness", "is_empty_update", "merge_ranges", "parse_message", "parse_state",
    "permission_denied",
    "query_awareness", "struct_groups", "sync_step1", "sync_step2", "sync_update",
]
