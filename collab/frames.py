"""Wire frames of the native protocol (``/ws``): parse untrusted text, build replies.

Every frame is one JSON object with a type field ``t``. One WebSocket text message carries
one frame or several frames separated by ``\\n`` (canonical JSON never contains a raw
newline, so splitting is safe); both sides must accept batches. ``rid`` is an optional
client-chosen request id (valid-Unicode string up to 64 chars, or integer with |rid| <= 2**53-1)
echoed on the reply. The normative description is ``docs/protocol.md``.

client -> relay
  hello   {t, key, sig, rid?}             sig = Ed25519 over hello_bytes(key, nonce, relay)
  sub     {t, feed, since, rid?}          since = last seq the client has (0 = nothing)
  unsub   {t, feed, rid?}
  pub     {t, event, rid?}
  ping    {t, rid?}
  watch   {t, prefix, rid?}               announce new records of feeds whose id starts with prefix
  unwatch {t, prefix, rid?}

relay -> client
  challenge {t, nonce, relay}             first frame on every connection
  welcome   {t, key}                      hello accepted
  ok        {t, feed, id, seq, dup?, rid?}  after durable append (dup: stored earlier)
  error     {t, code, message, rid?, feed?, id?}
  rec       {t, feed, rec}                one record, in seq order per feed
  snapshot  {t, feed, snap}               merged state of a doc at snap.seq
  synced    {t, feed, seq, head}          backlog done; live records follow
  presence  {t, feed, op, keys}           op: "list" | "join" | "leave"
  unsubbed  {t, feed, rid?, reason?}      subscription ended (asked for, or access revoked)
  pong      {t, rid?}
  watching  {t, prefix, rid?}             watch accepted (idempotent)
  unwatched {t, prefix, rid?}
  announce  {t, feed, seq, head, kind, rtime}  a record was stored in a watched feed
"""
from __future__ import annotations

import json
from typing import Any

from .canonical import parse_json
from .errors import CanonicalError, MalformedFrame

CLIENT_FRAMES = frozenset(("hello", "sub", "unsub", "pub", "ping", "watch", "unwatch"))
RELAY_FRAMES = frozenset(
    ("challenge", "welcome", "ok", "error", "rec", "snapshot", "synced", "presence", "unsubbed", "pong",
     "watching", "unwatched", "announce")
)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_JSON_WS = " \t\r\n"
MAX_RID_INT = 2**53 - 1


def sendable(value: Any) -> bool:
    """False for a string holding a lone surrogate: it cannot be sent back as UTF-8."""
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode(frame: dict[str, Any]) -> str:
    """Serialize a frame compactly (not necessarily canonical: frames are not signed)."""
    return _dumps(frame)


def split(message: str | bytes) -> list[str]:
    """Split one WebSocket message into frame texts (a batch is newline-separated)."""
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedFrame("frames are UTF-8 JSON text") from exc
    return [part for part in message.split("\n") if part.strip(_JSON_WS)]


def parse_value(text: str, what: str = "frame") -> Any:
    """Parse untrusted JSON text strictly (``collab.canonical.parse_json``: no floats, NaN or
    duplicate keys; nesting bounded by the interpreter); raise MalformedFrame naming ``what``."""
    try:
        return parse_json(text)
    except (ValueError, CanonicalError, RecursionError) as exc:
        raise MalformedFrame(f"{what} is not valid JSON: {exc}") from exc


def parse(text: str, allowed: frozenset[str] | None = CLIENT_FRAMES) -> dict[str, Any]:
    """Parse one frame; raise MalformedFrame with a reason a developer can act on.

    ``allowed=None`` accepts any string type (a client skipping types it does not know).
    """
    frame = parse_value(text)
    if not isinstance(frame, dict):
        raise MalformedFrame("frame must be a JSON object")
    t = frame.get("t")
    if not isinstance(t, str) or (allowed is not None and t not in allowed):
        raise MalformedFrame(f"unknown frame type {t!r}")
    rid = frame.get("rid")
    if rid is not None and not (
        (isinstance(rid, str) and len(rid) <= 64 and sendable(rid))
        or (isinstance(rid, int) and not isinstance(rid, bool) and -MAX_RID_INT <= rid <= MAX_RID_INT)
    ):
        raise MalformedFrame("rid must be a string (<= 64 chars) or an integer (|rid| <= 2**53-1)")
    return frame


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": "error", "code": code, "message": message}
    frame.update({k: v for k, v in extra.items() if v is not None and sendable(v)})
    return frame


def with_rid(frame: dict[str, Any], rid: Any) -> dict[str, Any]:
    if rid is not None:
        frame["rid"] = rid
    return frame
