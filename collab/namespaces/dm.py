"""``dm/<A>.<B>`` feeds: direct messages between two keys (docs/coordination.md).

The feed name fixes the access: only A and B read and write (``A < B``, both keys), and the
control kinds are refused. The one kind, ``dm.msg {nonce, box, re?}``, carries a NaCl box the
relay cannot open (``collab/dm.py`` seals and opens it), so the state is metadata only: a
count, the last seq, and the last :data:`MAX_RECENT` messages' seq/author/re/id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..access import Access
from ..canonical import canonical, parse_json
from ..errors import InvalidEvent, Unauthorized
from ..events import HEX64_RE, Event, Record, unb64
from .base import Admission, Namespace

PREFIX = "dm/"
NONCE_BYTES = 24
MAC_BYTES = 16  # a box is at least its Poly1305 tag
MAX_RECENT = 100


def parse_dm_feed(feed: str) -> tuple[str, str]:
    """``(A, B)`` of ``dm/<A>.<B>``; raise InvalidEvent unless both are keys and ``A < B``."""
    name = feed[len(PREFIX):] if feed.startswith(PREFIX) else ""
    a, _, b = name.partition(".")
    if not (HEX64_RE.match(a) and HEX64_RE.match(b) and a < b):
        raise InvalidEvent("dm feeds are dm/<A>.<B> with A < B, both 64 lowercase hex chars")
    return a, b


def check_msg(body: Any) -> tuple[bytes, bytes, str | None]:
    """``(nonce, box, re)`` of a ``dm.msg`` body ``{nonce: b64(24 bytes), box: b64, re?: id}``."""
    if not isinstance(body, dict) or not {"nonce", "box"} <= set(body) <= {"nonce", "box", "re"}:
        raise InvalidEvent("dm.msg body is {nonce, box, re?}")
    nonce, box = unb64(body["nonce"]), unb64(body["box"])
    if len(nonce) != NONCE_BYTES:
        raise InvalidEvent(f"nonce must be {NONCE_BYTES} bytes")
    if len(box) < MAC_BYTES:
        raise InvalidEvent(f"box must be at least {MAC_BYTES} bytes (its authentication tag)")
    re = body.get("re")
    if "re" in body and (not isinstance(re, str) or not HEX64_RE.match(re)):
        raise InvalidEvent("re must be an event id (64 lowercase hex chars)")
    return nonce, box, re


@dataclass(frozen=True, slots=True)
class MsgMeta:
    """What the relay knows of a message: never its plaintext."""

    seq: int
    author: str
    id: str
    re: str | None = None


@dataclass(frozen=True, slots=True)
class DmState:
    count: int = 0
    last_seq: int = 0
    recent: tuple[MsgMeta, ...] = ()  # the last MAX_RECENT messages, oldest first


class DmNamespace(Namespace[DmState]):
    name = "dm"
    default_policy = "members"
    kinds = frozenset(("dm.msg",))
    immutable_state = True

    def initial(self, feed: str) -> DmState:
        return DmState()

    def initial_access(self, feed: str) -> Access | None:
        """Only A and B read and write. A malformed name gets nobody (validate refuses every
        event with ``invalid``) rather than an exception in the relay's feed loading."""
        try:
            members = frozenset(parse_dm_feed(feed))
        except InvalidEvent:
            members = frozenset()
        return Access(policy="members", owner=None, readers=members, writers=members)

    def validate(self, state: DmState, event: Event, adm: Admission) -> None:
        a, b = parse_dm_feed(event.feed)
        if event.kind != "dm.msg":
            raise InvalidEvent("dm feeds accept kind dm.msg only")
        if event.author not in (a, b):
            raise Unauthorized("only the two keys named by a dm feed may write it")
        check_msg(event.body)

    def apply(self, state: DmState, record: Record) -> DmState:
        ev = record.event
        try:
            self.validate(state, ev, Admission.of(record))
        except (InvalidEvent, Unauthorized):  # the relay would have refused it
            return state
        meta = MsgMeta(record.seq, ev.author, ev.id, ev.body.get("re"))
        return DmState(state.count + 1, record.seq, (*state.recent, meta)[-MAX_RECENT:])

    def dump(self, state: DmState) -> bytes:
        return canonical({"count": state.count, "last_seq": state.last_seq,
                          "recent": [[m.seq, m.author, m.id, m.re] for m in state.recent]})

    def load(self, feed: str, data: bytes) -> DmState:
        d = parse_json(data)
        return DmState(d["count"], d["last_seq"], tuple(MsgMeta(*m) for m in d["recent"]))

    def view(self, state: DmState) -> Any:
        return {"count": state.count, "last_seq": state.last_seq,
                "messages": [{"seq": m.seq, "author": m.author, "re": m.re, "id": m.id} for m in state.recent]}
