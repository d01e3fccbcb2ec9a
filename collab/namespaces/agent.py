"""``agent/<KEY>`` feeds: the directory (docs/coordination.md, "Directory").

Only ``KEY`` writes its own feed, one kind: ``agent.profile {name, description?,
capabilities?}``; the latest profile wins. The access is fixed by the name (policy ``signed``,
owner ``KEY``), so nobody can squat a feed with a ``feed.policy`` or ``acl.*`` of their own.
The relay's in-memory index (``relay/coordination/directory.py``) answers ``GET /agents``; this state
machine is what a replayer checks it against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..access import Access
from ..canonical import canonical, parse_json
from ..errors import InvalidEvent, Unauthorized
from ..events import HEX64_RE, Event, Record
from .base import Admission, Namespace

PREFIX = "agent/"
MAX_CAPABILITIES = 32


def feed_key(feed: str) -> str:
    """The key that owns ``agent/<KEY>``; raise InvalidEvent for any other name."""
    key = feed[len(PREFIX):] if feed.startswith(PREFIX) else ""
    if not HEX64_RE.match(key):
        raise InvalidEvent("agent feeds are agent/<KEY> with KEY 64 lowercase hex chars")
    return key


def check_profile(body: Any) -> None:
    """``{name: str 1..64, description?: str<=1000, capabilities?: [str 1..64, <=32 distinct]}``."""
    if not isinstance(body, dict):
        raise InvalidEvent("agent.profile body must be an object")
    extra = set(body) - {"name", "description", "capabilities"}
    if extra or "name" not in body:
        raise InvalidEvent(f"agent.profile body is {{name, description?, capabilities?}} (unknown {sorted(extra)})")
    name = body["name"]
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise InvalidEvent("name must be a string of 1..64 characters")
    desc = body.get("description", "")
    if not isinstance(desc, str) or len(desc) > 1000:
        raise InvalidEvent("description must be a string of at most 1000 characters")
    caps = body.get("capabilities", [])
    if not isinstance(caps, list) or len(caps) > MAX_CAPABILITIES:
        raise InvalidEvent(f"capabilities must be a list of at most {MAX_CAPABILITIES} strings")
    if not all(isinstance(c, str) and 1 <= len(c) <= 64 for c in caps):
        raise InvalidEvent("each capability must be a string of 1..64 characters")
    if len(set(caps)) != len(caps):
        raise InvalidEvent("capabilities must be distinct")


@dataclass(frozen=True, slots=True)
class AgentState:
    """The latest profile of ``key`` (None before the first), with its rtime and seq."""

    key: str
    profile: dict[str, Any] | None = None
    rtime: int = 0
    seq: int = 0


class AgentNamespace(Namespace[AgentState]):
    name = "agent"
    kinds = frozenset(("agent.profile",))
    immutable_state = True

    def initial(self, feed: str) -> AgentState:
        return AgentState(feed[len(PREFIX):] if feed.startswith(PREFIX) else "")

    def initial_access(self, feed: str) -> Access | None:
        # fixed even for a malformed name (validate refuses its every event): no squatting
        key = feed[len(PREFIX):] if feed.startswith(PREFIX) else ""
        return Access(policy="signed", owner=key if HEX64_RE.match(key) else None)

    def validate(self, state: AgentState, event: Event, adm: Admission) -> None:
        key = feed_key(event.feed)
        if event.kind != "agent.profile":
            raise InvalidEvent("agent feeds accept kind agent.profile only")
        if event.author != key:
            raise Unauthorized("only the key named by an agent feed may write it")
        check_profile(event.body)

    def apply(self, state: AgentState, record: Record) -> AgentState:
        ev = record.event
        try:
            self.validate(state, ev, Admission.of(record))
        except (InvalidEvent, Unauthorized):  # the relay would have refused it
            return state
        return AgentState(state.key, dict(ev.body), record.rtime, record.seq)

    def dump(self, state: AgentState) -> bytes:
        return canonical({"key": state.key, "profile": state.profile, "rtime": state.rtime, "seq": state.seq})

    def load(self, feed: str, data: bytes) -> AgentState:
        d = parse_json(data)
        return AgentState(d["key"], d["profile"], d["rtime"], d["seq"])

    def view(self, state: AgentState) -> Any:
        p = state.profile or {}
        return {"key": state.key, "name": p.get("name"), "description": p.get("description", ""),
                "capabilities": list(p.get("capabilities", [])), "updated": state.rtime if state.profile else None}
