"""``task/`` feeds: task trees (docs/coordination.md, "Task trees").

A leader opens a task and spawns subtasks assigned to agents; the assignee reports
(heartbeat, progress, checkpoint, input, done, failed); the relay flags a subtask
``stalled`` when it misses its heartbeat window; the leader replies, cancels, reassigns
(the new assignee resumes from the last checkpoint) or closes the task.

The state is immutable (copy-on-write): ``apply`` returns a new :class:`TaskState` and
never touches its input, so the relay can fold a batch tentatively. ``apply`` re-checks
admissibility on the record itself (``Admission.of``) and skips a record that would have
been refused, so a replayer folding a log with a bad record still agrees with the relay.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..canonical import canonical, parse_json
from ..errors import ColonyError, Conflict, InvalidEvent, StaleEpoch, Unauthorized
from ..events import HEX64_RE, Event, Record, check_feed, namespace_of
from .base import Admission, Namespace
from .lease import parse_fence

log = logging.getLogger(__name__)

SUBID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
SUBMITTED, WORKING, INPUT_REQUIRED = "submitted", "working", "input-required"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
STATUSES = (SUBMITTED, WORKING, INPUT_REQUIRED, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset((COMPLETED, FAILED, CANCELLED))
STALLABLE = frozenset((SUBMITTED, WORKING))
NEW, OPEN = "new", "open"  # task status before task.open / while open; closed: a TERMINAL status
DEFAULT_HEARTBEAT_MS = 30_000
MIN_HEARTBEAT_MS, MAX_HEARTBEAT_MS = 500, 86_400_000

LEADER_KINDS = frozenset(("task.spawn", "task.reply", "task.cancel", "task.reassign", "task.close"))
REPORT_KINDS = frozenset(("task.heartbeat", "task.progress", "task.checkpoint", "task.input",
                          "task.done", "task.failed"))
KINDS = LEADER_KINDS | REPORT_KINDS | {"task.open", "task.stalled"}

#: kind -> (required body fields, optional body fields); anything else is refused
#: (every kind may also carry a ``fence``, collab.namespaces.lease; ``task.open`` a ``lease``)
FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    k: (frozenset(req.split()), frozenset(opt.split()) | {"fence"}) for k, req, opt in (
        ("task.open", "title", "input lease"),
        ("task.spawn", "sub assignee title", "input heartbeat_ms parent"),
        ("task.heartbeat", "sub", ""),
        ("task.progress", "sub done total", "note"),
        ("task.checkpoint", "sub state", ""),
        ("task.input", "sub question", ""),
        ("task.reply", "sub answer", ""),
        ("task.done", "sub", "result"),
        ("task.failed", "sub reason", ""),
        ("task.cancel", "sub", ""),
        ("task.reassign", "sub assignee", "auction"),
        ("task.stalled", "sub assignee last_seen", ""),
        ("task.close", "status", "result"),
    )
}


@dataclass(frozen=True, slots=True)
class SubState:
    """One subtask. ``last_seen`` is the rtime of the assignee's last report, or of the
    spawn/reassign/reply that (re)started its heartbeat window."""

    sub: str
    assignee: str
    title: str
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    input: Any = None
    parent: str | None = None
    status: str = SUBMITTED
    stalled: bool = False
    last_seen: int = 0
    spawned: int = 0
    updated: int = 0
    done: int = 0
    total: int = 0  # 0: no progress reported yet
    note: str | None = None
    checkpoint: Any = None
    checkpoint_seq: int = 0  # 0: no checkpoint yet (a checkpoint's state may itself be null)
    question: str | None = None
    answer: Any = None
    result: Any = None
    reason: str | None = None
    auction: str | None = None
    previous: tuple[str, ...] = ()  # earlier assignees, oldest first


@dataclass(frozen=True, slots=True)
class TaskState:
    """A task feed's state. ``subs`` is never mutated after construction (copy-on-write);
    its order is spawn order."""

    leader: str | None = None
    title: str = ""
    input: Any = None
    status: str = NEW
    result: Any = None
    opened_at: int = 0
    closed_at: int = 0
    seq: int = 0
    subs: dict[str, SubState] = field(default_factory=dict)
    lease: str | None = None  # the lease whose holder leads this task (docs/coordination.md, "Leases")
    fence_epoch: int = 0  # the highest lease epoch a leader event carried

    @property
    def closed(self) -> bool:
        return self.status in TERMINAL


# -- body checks ---------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(body: dict[str, Any], name: str, hi: int, lo: int = 0) -> None:
    v = body.get(name)
    if not isinstance(v, str) or not lo <= len(v) <= hi:
        raise InvalidEvent(f"{name} must be a string of {lo}..{hi} characters")


def _key(body: dict[str, Any], name: str) -> None:
    if not isinstance(body[name], str) or not HEX64_RE.match(body[name]):
        raise InvalidEvent(f"{name} must be a key (64 lowercase hex chars)")


def _subid(body: dict[str, Any], name: str) -> None:
    if not isinstance(body[name], str) or not SUBID_RE.match(body[name]):
        raise InvalidEvent(f"{name} must match [A-Za-z0-9._-]{{1,64}}")


def check_body(kind: str, body: Any) -> None:
    """Shape and types of a task event body (no state needed); raise InvalidEvent."""
    if kind not in FIELDS:
        raise InvalidEvent(f"task feeds accept kinds {sorted(KINDS)}")
    if not isinstance(body, dict):
        raise InvalidEvent(f"{kind} body must be an object")
    required, optional = FIELDS[kind]
    missing, extra = required - set(body), set(body) - required - optional
    if missing or extra:
        raise InvalidEvent(f"{kind} body fields wrong (missing {sorted(missing)}, unknown {sorted(extra)})")
    if "fence" in body:
        parse_fence(body["fence"])
    if kind == "task.open" and "lease" in body and namespace_of(check_feed(body["lease"])) != "lease":
        raise InvalidEvent("lease must be a lease/ feed")
    if "sub" in required:
        _subid(body, "sub")
    if kind in ("task.open", "task.spawn"):
        _text(body, "title", 200)
    if "assignee" in required:
        _key(body, "assignee")
    if kind == "task.spawn":
        hb = body.get("heartbeat_ms", DEFAULT_HEARTBEAT_MS)
        if not _is_int(hb) or not MIN_HEARTBEAT_MS <= hb <= MAX_HEARTBEAT_MS:
            raise InvalidEvent(f"heartbeat_ms must be an integer {MIN_HEARTBEAT_MS}..{MAX_HEARTBEAT_MS}")
        if "parent" in body:
            _subid(body, "parent")
    elif kind == "task.progress":
        done, total = body["done"], body["total"]
        if not (_is_int(done) and _is_int(total) and total > 0 and 0 <= done <= total):
            raise InvalidEvent("progress needs integers 0 <= done <= total, total > 0")
        if "note" in body:
            _text(body, "note", 1000)
    elif kind == "task.input":
        _text(body, "question", 1000)
    elif kind == "task.failed":
        _text(body, "reason", 1000)
    elif kind == "task.reassign" and "auction" in body:
        if namespace_of(check_feed(body["auction"])) != "auction":
            raise InvalidEvent("auction must be an auction/ feed")
    elif kind == "task.stalled":
        if not _is_int(body["last_seen"]) or body["last_seen"] < 0:
            raise InvalidEvent("last_seen must be a non-negative integer (ms)")
    elif kind == "task.close" and body["status"] not in TERMINAL:
        raise InvalidEvent("close status must be completed, failed or cancelled")


def check(state: TaskState, event: Event, adm: Admission) -> None:
    """Raise unless ``event`` is admissible on ``state`` when sequenced as ``adm`` says.

    Order: body shape [invalid], task opened [invalid/conflict], the leader's kinds by the
    leader and ``task.stalled`` by the relay [unauthorized], task closed [conflict], the
    subtask exists [conflict], reports by its assignee [unauthorized], subtask terminal and
    kind-specific state [conflict], the stall window [invalid].
    """
    kind, body = event.kind, event.body
    check_body(kind, body)
    if kind == "task.open":
        if state.leader is not None:
            raise Conflict("the task is already open")
        if "lease" in body and (fence := body.get("fence")) is not None and fence["lease"] != body["lease"]:
            raise InvalidEvent("a leased task.open carries a fence naming its lease")
        if "lease" in body and "fence" not in body:
            raise InvalidEvent("a leased task.open carries a fence naming its lease")
        return
    if state.leader is None:
        raise InvalidEvent("the first event of a task feed must be task.open")
    if kind in LEADER_KINDS and state.lease is not None:
        _check_leadership(state, event)
    elif kind in LEADER_KINDS and event.author != state.leader:
        raise Unauthorized(f"only the task's leader may {kind}")
    if kind == "task.stalled" and event.author != adm.relay:
        raise Unauthorized("only the sequencing relay may emit task.stalled")
    if state.closed:
        raise Conflict(f"the task is closed ({state.status})")
    if kind == "task.close":
        return
    sub = state.subs.get(body["sub"])
    if kind == "task.spawn":
        if sub is not None:
            raise Conflict(f"subtask {body['sub']} already exists")
        parent = state.subs.get(body.get("parent", ""))
        if "parent" in body and parent is None:
            raise Conflict(f"parent subtask {body['parent']} does not exist")
        if parent is not None and parent.status in TERMINAL:
            raise Conflict(f"parent subtask {parent.sub} is {parent.status}")
        return
    if sub is None:
        raise Conflict(f"no subtask {body['sub']}")
    if kind in REPORT_KINDS and event.author != sub.assignee:
        raise Unauthorized(f"only subtask {sub.sub}'s current assignee may {kind}")
    if sub.status in TERMINAL:
        raise Conflict(f"subtask {sub.sub} is {sub.status}")
    if kind == "task.input" and sub.status == INPUT_REQUIRED:
        raise Conflict(f"subtask {sub.sub} already waits for input")
    if kind == "task.reply" and sub.status != INPUT_REQUIRED:
        raise Conflict(f"subtask {sub.sub} asked no question ({sub.status})")
    if kind == "task.stalled":
        if sub.status not in STALLABLE:
            raise Conflict(f"subtask {sub.sub} is {sub.status}; only submitted/working subtasks stall")
        if sub.stalled:
            raise Conflict(f"subtask {sub.sub} is already flagged stalled")
        if body["assignee"] != sub.assignee or body["last_seen"] != sub.last_seen:
            raise Conflict("task.stalled names another assignee or last_seen than the state (stale timer)")
        if adm.now <= sub.last_seen + sub.heartbeat_ms:
            raise InvalidEvent(f"subtask {sub.sub} is within its heartbeat window until "
                               f"{sub.last_seen + sub.heartbeat_ms}")


def _check_leadership(state: TaskState, event: Event) -> None:
    """A leased task's leader kinds carry a fence naming its lease (the relay checked that the
    author holds it at that epoch); an epoch below the highest seen is refused, the same epoch
    must come from the same leader, a higher one makes its author the leader."""
    fence = event.body.get("fence")
    if fence is None or fence["lease"] != state.lease:
        raise Unauthorized(f"the task is led through {state.lease}: {event.kind} carries its fence")
    if fence["epoch"] < state.fence_epoch or (fence["epoch"] == state.fence_epoch and event.author != state.leader):
        raise StaleEpoch(f"epoch {fence['epoch']} of {state.lease} is older than the task's leader's")


# -- fold ----------------------------------------------------------------------------------------
def fold(state: TaskState, event: Event, rtime: int, seq: int) -> TaskState:
    """The new state after an admissible ``event`` sequenced at ``seq``/``rtime``."""
    kind, b = event.kind, event.body
    if kind == "task.open":
        return replace(state, leader=event.author, title=b["title"], input=b.get("input"), status=OPEN,
                       opened_at=rtime, seq=seq, lease=b.get("lease"),
                       fence_epoch=b["fence"]["epoch"] if "lease" in b else 0)
    if kind in LEADER_KINDS and state.lease is not None and b["fence"]["epoch"] > state.fence_epoch:
        state = replace(state, leader=event.author, fence_epoch=b["fence"]["epoch"])
    if kind == "task.close":
        return replace(state, status=b["status"], result=b.get("result"), closed_at=rtime, seq=seq)
    if kind == "task.spawn":
        s = SubState(b["sub"], b["assignee"], b["title"], b.get("heartbeat_ms", DEFAULT_HEARTBEAT_MS),
                     b.get("input"), b.get("parent"), last_seen=rtime, spawned=rtime, updated=rtime)
        return replace(state, subs={**state.subs, s.sub: s}, seq=seq)
    s = state.subs[b["sub"]]
    if kind in REPORT_KINDS:
        status = WORKING if s.status == SUBMITTED else s.status
        s = replace(s, status=status, stalled=False, last_seen=rtime, updated=rtime)
        if kind == "task.progress":
            s = replace(s, done=b["done"], total=b["total"], note=b.get("note"))
        elif kind == "task.checkpoint":
            s = replace(s, checkpoint=b["state"], checkpoint_seq=seq)
        elif kind == "task.input":
            s = replace(s, status=INPUT_REQUIRED, question=b["question"])
        elif kind == "task.done":
            s = replace(s, status=COMPLETED, result=b.get("result"))
        elif kind == "task.failed":
            s = replace(s, status=FAILED, reason=b["reason"])
    elif kind == "task.reply":  # the heartbeat window restarts: the assignee has work again
        s = replace(s, status=WORKING, answer=b["answer"], question=None, stalled=False, last_seen=rtime,
                    updated=rtime)
    elif kind == "task.cancel":
        s = replace(s, status=CANCELLED, updated=rtime)
    elif kind == "task.reassign":  # keeps checkpoint and progress: the new assignee resumes
        s = replace(s, assignee=b["assignee"], status=SUBMITTED, stalled=False, last_seen=rtime, updated=rtime,
                    question=None, auction=b.get("auction"), previous=(*s.previous, s.assignee))
    elif kind == "task.stalled":
        s = replace(s, stalled=True, updated=rtime)
    return replace(state, subs={**state.subs, s.sub: s}, seq=seq)


# -- helpers for the relay's timers and the leader's SDK -----------------------------------------
def stall_deadlines(state: TaskState) -> list[tuple[int, str]]:
    """``(deadline ms, sub)`` for every submitted/working, not-stalled subtask of an open task:
    ``task.stalled`` becomes admissible once ``now > deadline``."""
    if state.status != OPEN:
        return []
    return sorted((s.last_seen + s.heartbeat_ms, s.sub) for s in state.subs.values()
                  if s.status in STALLABLE and not s.stalled)


def progress(state: TaskState) -> dict[str, Any]:
    """Aggregate over all subtasks: counts per status, stalled count, reported done/total
    summed, and ``percent`` = done * 100 // total (0 while nothing reported)."""
    by_status = dict.fromkeys(STATUSES, 0)
    done = total = stalled = 0
    for s in state.subs.values():
        by_status[s.status] += 1
        stalled += s.stalled
        done += s.done
        total += s.total
    return {"subtasks": len(state.subs), "by_status": by_status, "stalled": stalled, "done": done,
            "total": total, "percent": done * 100 // total if total else 0}


def _sub_json(s: SubState) -> dict[str, Any]:
    d = {f.name: getattr(s, f.name) for f in fields(SubState)}
    d["previous"] = list(s.previous)
    return d


def _sub_view(s: SubState) -> dict[str, Any]:
    d = _sub_json(s)
    del d["checkpoint_seq"], d["done"], d["total"], d["note"]
    d["checkpoint"] = {"state": s.checkpoint, "seq": s.checkpoint_seq} if s.checkpoint_seq else None
    d["progress"] = {"done": s.done, "total": s.total, "note": s.note} if s.total else None
    return d


class TaskNamespace(Namespace[TaskState]):
    name = "task"
    kinds = KINDS
    immutable_state = True

    def initial(self, feed: str) -> TaskState:
        return TaskState()

    def validate(self, state: TaskState, event: Event, adm: Admission) -> None:
        check(state, event, adm)

    def apply(self, state: TaskState, record: Record) -> TaskState:
        try:
            check(state, record.event, Admission.of(record))
        except ColonyError as exc:  # the relay would have refused it: fold nothing, stay in step
            log.warning("task record %s#%d skipped: %s", record.feed, record.seq, exc)
            return replace(state, seq=record.seq)
        return fold(state, record.event, record.rtime, record.seq)

    def dump(self, state: TaskState) -> bytes:
        d = {f.name: getattr(state, f.name) for f in fields(TaskState)}
        d["subs"] = [_sub_json(s) for s in state.subs.values()]
        return canonical(d)

    def load(self, feed: str, data: bytes) -> TaskState:
        d = parse_json(data)
        subs = {s["sub"]: SubState(**{**s, "previous": tuple(s["previous"])}) for s in d.pop("subs")}
        return TaskState(**d, subs=subs)

    def view(self, state: TaskState) -> Any:
        return {"leader": state.leader, "lease": state.lease, "fence_epoch": state.fence_epoch or None,
                "title": state.title, "input": state.input, "status": state.status,
                "result": state.result, "opened": state.opened_at or None, "closed": state.closed_at or None,
                "seq": state.seq, "subtasks": [_sub_view(s) for s in state.subs.values()],
                "progress": progress(state)}
