"""The sans-I/O feed core: one feed's fold, dedup, access, chain and sealing.

:class:`FeedCore` is the one place that knows how a feed's records become its state. It is fed
records and batches of publishes and says what happened; it never awaits, reads a clock or
touches a socket (the relay time and the signing key come in as arguments). The relay's per-feed
worker (``relay.core.worker``) pumps it between storage and subscribers; replay, compaction,
the HTTP time-travel view, feed views, the coordinator, auctions and trust fold through it too.

* :meth:`FeedCore.fold` folds one durable record: access (``collab.access``), then the
  namespace's ``apply`` for non-control kinds, then the head and the recent-id dedup set.
* :func:`link` is the one hash-chain check: does a record extend ``(seq, head)``?
* :meth:`FeedCore.seal` validates a batch of publishes and seals the accepted ones into the
  next records (``docs/design.md``, "Sequencing"): an immutable-state namespace is folded
  tentatively event by event so later events of the batch see earlier ones; a mutable one
  (docs) validates each event alone and is folded only by :meth:`commit`, after the append.
* :meth:`FeedCore.commit` folds the durable records of a batch and returns the frames to fan out,
  cut where the access changes (``docs/protocol.md`` section 12, "Access changes bind at once").
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import frames
from .access import CONTROL_KINDS, Access, apply_access, validate_control
from .errors import ChainError, ColonyError, InvalidEvent, TooLarge, Unauthorized
from .events import GENESIS, Event, Record
from .feedcore_chain import Link, link
from .keys import Keypair
from .namespaces.base import Admission, Namespace

ID_CACHE = 50_000  # recent event ids kept for dedup; older ones are looked up in storage
RecordListener = Callable[[Record, str], None]

def record_frame(feed: str, record_json: str) -> str:
    """The ``rec`` frame carrying a stored record line, built without re-encoding it."""
    return '{"t":"rec","feed":' + json.dumps(feed) + ',"rec":' + record_json + "}"


def record_line(rec: Record) -> str:
    """The wire JSON of a record the relay sealed (``frames.encode(rec.to_wire())``, the same
    text), with its own members written out: they are hex and integers, never escaped."""
    return (f'{{"seq":{rec.seq},"prev":"{rec.prev}","rtime":{rec.rtime},"relay":"{rec.relay}","rsig":"{rec.rsig}",'
            f'"event":{frames.encode(rec.event.to_wire())}}}')


def narrows(before: Access, after: Access) -> bool:
    """Whether ``after`` may refuse a reader ``before`` let read (a switch to ``members``, a
    revoke, a grant with ``read: false``): the fan-out must then cut (:class:`Committed`)."""
    return after.policy == "members" and (before.policy != "members" or before.owner != after.owner
                                          or not before.readers <= after.readers)


def admit(ns: Namespace[Any], state: Any, access: Access, event: Event, session_key: str | None, seq: int,
          adm: Admission, *, fixed_access: bool = False, max_event_bytes: int | None = None,
          check_access: bool = True) -> None:
    """Raise the :class:`ColonyError` the relay refuses ``event`` with if it were sequenced at
    ``seq`` on ``(state, access)``; return quietly if it would be accepted."""
    if max_event_bytes is not None and event.size > max_event_bytes:
        raise TooLarge(f"event is {event.size} bytes; the limit is {max_event_bytes}")
    if ns.relay_owned and event.author != adm.relay and (seq == 1 or event.kind == "feed.policy"):
        raise Unauthorized(f"{ns.name}/ feeds belong to the relay: it opens them (their first record and "
                           "policy are the relay's)")
    if check_access:
        access.check_write(event, session_key, seq, adm.now)
    if event.kind in CONTROL_KINDS:
        if fixed_access:
            raise InvalidEvent(f"{ns.name} feeds have fixed access; control kinds are refused")
        if check_access:
            validate_control(access, event, seq)
    else:
        if ns.kinds and event.kind not in ns.kinds:
            raise InvalidEvent(f"{ns.name} feeds accept kinds {sorted(ns.kinds)}")
        ns.validate(state, event, adm)


@dataclass(slots=True)
class Sealed:
    """What :meth:`FeedCore.seal` made of a batch (nothing of it is stored or folded yet).

    ``records``: ``(index in the batch, record, its wire JSON)`` for the accepted publishes, in
    seq order; ``answers``: ``(index, (seq, dup))`` for duplicates, ``(index, error)`` for refusals;
    ``opening``: the relay's opening record (seq 1) of a relay-owned feed and its wire JSON, to
    append just before ``records`` (it is there only when some publish of the batch was accepted).
    """

    records: list[tuple[int, Record, str]] = field(default_factory=list)
    answers: list[tuple[int, tuple[int, bool] | ColonyError]] = field(default_factory=list)
    opening: tuple[Record, str] | None = None
    receipts: list[bytes] = field(default_factory=list)  # sealed with ``sign=False``: what to sign

    def sign_with(self, rsigs: Sequence[bytes]) -> None:
        """Put the relay's signatures of :attr:`receipts` (in order) on :attr:`records` and
        write their lines (a seal with ``sign=False``)."""
        if len(rsigs) != len(self.records):
            raise ValueError("one signature per record")
        self.records = [(i, signed := rec.signed(rsig), record_line(signed))
                        for (i, rec, _), rsig in zip(self.records, rsigs, strict=True)]
        self.receipts = []

    def lines(self) -> list[tuple[Record, str]]:
        """Every record to append, in seq order (the opening first)."""
        head = [self.opening] if self.opening is not None else []
        return head + [(rec, line) for _, rec, line in self.records]


@dataclass(slots=True)
class Committed:
    """What :meth:`FeedCore.commit` folded: the ``rec`` frames to fan out, in order, and the
    access changes among them. ``cuts`` holds ``(i, access)`` for each record ``frames[i]`` that
    narrowed who may read the feed (:func:`narrows`: ``feed.policy members``, ``acl.*``): from
    ``frames[i]`` on (that record included), only subscribers that may read under ``access``
    are sent anything; the others are dropped before it (``relay.core.fanout.Fanout.send_committed``)."""

    frames: list[str]
    cuts: list[tuple[int, Access]] = field(default_factory=list)

    @property
    def acl_changed(self) -> bool:
        return bool(self.cuts)


class FeedCore:
    """One feed's derived state, folded from its records; pure (no I/O, no clock)."""

    __slots__ = ("access", "bytes", "feed", "fixed_access", "head", "id_cache", "ids", "ids_complete", "ns", "seq",
                 "state", "tentative")

    def __init__(self, feed: str, ns: Namespace[Any], *, id_cache: int = ID_CACHE) -> None:
        self.feed, self.ns = feed, ns
        self.seq = 0
        self.head = GENESIS
        self.state: Any = ns.initial(feed)
        fixed = ns.initial_access(feed)
        self.fixed_access = fixed is not None
        self.access: Access = fixed or Access(policy=ns.default_policy)
        self.ids: dict[str, int] = {}  # recent event id -> seq (0 capacity: not tracked)
        self.ids_complete = True  # every id of the feed is in ``ids`` (no storage lookup needed)
        self.id_cache = id_cache
        self.tentative = ns.immutable_state
        self.bytes = 0  # the summed size of the folded events' signing bytes (``max_feed_bytes``)

    # -- folding ---------------------------------------------------------------------------
    def restore(self, seq: int, head: str, state: bytes, access: Access | str | None = None) -> None:
        """Start from a snapshot or base: the namespace's dump of the state after ``seq`` (whose
        record hash is ``head``) and its access (a meta JSON string ``{"access": ...}`` as
        stored beside snapshots, an :class:`Access`, or None to keep the initial one). The meta's
        ``"bytes"`` (the event bytes folded through ``seq``) restores :attr:`bytes`; without it
        (a compacted base, an older snapshot) the size of the state stands in."""
        self.state = self.ns.load(self.feed, state)
        self.bytes = len(state)
        if isinstance(access, str):
            meta = json.loads(access)
            if isinstance(meta.get("bytes"), int):
                self.bytes = meta["bytes"]
            access = Access.from_json(meta["access"])
        if access is not None:
            self.access = access
        self.seq, self.head = seq, head
        self.ids_complete = False

    def adopt(self, other: FeedCore) -> None:
        """Take ``other``'s head, state, access and dedup set (a reload from storage)."""
        self.seq, self.head, self.state, self.access = other.seq, other.head, other.state, other.access
        self.ids, self.ids_complete, self.bytes = other.ids, other.ids_complete, other.bytes

    def fold(self, rec: Record) -> None:
        """Fold one durable record (the caller has placed it: see :meth:`extend`)."""
        ev = rec.event
        seq = rec.seq
        self.access = apply_access(self.access, ev, seq)
        if ev.kind not in CONTROL_KINDS:
            self.state = self.ns.apply(self.state, rec)
        self.seq, self.head = seq, rec.hash
        self.bytes += ev.size
        if self.id_cache:
            self.ids[ev.id] = seq

    def skip(self, rec: Record) -> None:
        """Take ``rec`` into the chain (head, seq, dedup) without folding it into the state: a
        quarantined record (``relay.core.worker``: the Yjs engine fails on it)."""
        self.seq, self.head = rec.seq, rec.hash
        if self.id_cache:
            self.ids[rec.event.id] = rec.seq

    def link(self, rec: Record) -> Link:
        return link(self.seq, self.head, rec)

    def extend(self, rec: Record) -> None:
        """Fold ``rec`` if it extends the chain; raise :class:`collab.errors.ChainError` otherwise."""
        how = link(self.seq, self.head, rec)
        if how != "next":
            raise ChainError(f"{self.feed}: record {rec.seq} does not follow {self.seq} ({how})")
        self.fold(rec)

    def trim_ids(self) -> None:
        """Keep the dedup set bounded; once trimmed, unknown ids must be looked up in storage."""
        excess = len(self.ids) - self.id_cache
        if excess <= 0:
            return
        for k in list(self.ids)[:excess]:
            del self.ids[k]
        self.ids_complete = False

    def commit(self, recs: Iterable[tuple[Record, str]],
               listeners: Sequence[RecordListener] = ()) -> Committed:
        """Fold durable records (each extends the head) and return the frames to fan out.
        Each listener is called with every record (and its line) right after it is folded.
        A record that changes the access is a cut (:class:`Committed`): it and every later
        record are for readers under the access it made."""
        cuts: list[tuple[int, Access]] = []
        parts: list[str] = []
        feed = json.dumps(self.feed)
        for rec, rjson in recs:
            before = self.access
            self.fold(rec)
            if self.access is not before and narrows(before, self.access):
                cuts.append((len(parts), self.access))
            parts.append('{"t":"rec","feed":' + feed + ',"rec":' + rjson + "}")
            for listener in listeners:
                listener(rec, rjson)
        if len(self.ids) > self.id_cache:
            self.trim_ids()
        return Committed(parts, cuts)

    # -- sequencing ------------------------------------------------------------------------
    def unknown_ids(self, events: Iterable[Event]) -> list[str]:
        """Ids of ``events`` that must be looked up in storage before :meth:`seal` (empty while
        the dedup set holds every id of the feed)."""
        if self.ids_complete:
            return []
        return [ev.id for ev in events if ev.id not in self.ids]

    def seal(self, batch: Sequence[tuple[Event, str | None]], relay_key: Keypair, now: int,
             max_event_bytes: int, stored: Mapping[str, int] | None = None,
             max_feed_bytes: int | None = None, opening: Event | None = None, *, sign: bool = True) -> Sealed:
        """Answer duplicates and refusals among ``batch`` (``(event, session key)`` pairs) and
        seal the rest as the next records at relay time ``now``. ``stored`` maps ids found in
        storage (see :meth:`unknown_ids`) to their seq. With ``max_feed_bytes``, an event
        (but a control event) that would take :attr:`bytes` past it is refused ``too_large``
        (the same answer whatever the batching: the sum is over the records before it).
        ``opening`` (the relay's event that opens a relay-owned feed) is sealed as seq 1 just
        before the first other event accepted while the feed is empty (:attr:`Sealed.opening`);
        while no event is accepted, nothing is opened. Nothing is folded: :meth:`commit` the
        records once they are durable. ``sign=False``: the records (but the opening) are left
        unsigned, their receipt bytes in :attr:`Sealed.receipts`, their lines empty: sign them
        elsewhere, then :meth:`Sealed.sign_with` (the chain does not depend on the signatures)."""
        ns, ids = self.ns, self.ids
        stored = stored or {}
        seq, head, access, state = self.seq, self.head, self.access, self.state
        tentative, fixed = self.tentative, self.fixed_access
        adm = Admission(now, relay_key.public_hex)
        out = Sealed()
        in_batch: dict[str, int] = {}
        size = self.bytes
        opened_once: tuple[Record, str, Access, Any] | None = None
        for i, (ev, session_key) in enumerate(batch):
            known = ids.get(ev.id) or stored.get(ev.id) or in_batch.get(ev.id)
            if known:
                out.answers.append((i, (known, True)))
                continue
            opened = None
            if seq == 0 and opening is not None and ev.id != opening.id:
                try:  # the relay's opening first: this event is judged on the feed it opens
                    opened = opened_once = opened_once or self._open(opening, relay_key, now, adm)
                except ColonyError as exc:
                    out.answers.append((i, exc))
                    continue
                seq, head, access, state, size = 1, opened[0].hash, opened[2], opened[3], size + opening.size
            try:
                if max_feed_bytes is not None and size + ev.size > max_feed_bytes and ev.kind not in CONTROL_KINDS:
                    raise TooLarge(f"the feed holds {size} bytes of events; {ev.size} more would pass the limit "
                                   f"of {max_feed_bytes}")
                admit(ns, state, access, ev, session_key, seq + 1, adm, fixed_access=fixed,
                      max_event_bytes=max_event_bytes)
            except ColonyError as exc:
                out.answers.append((i, exc))
                if opened is not None:  # not opened after all: nothing else needed it
                    seq, head, access, state, size = 0, self.head, self.access, self.state, self.bytes
                continue
            if opened is not None:
                out.opening = (opened[0], opened[1])
                in_batch[opened[0].event.id] = 1
            seq += 1
            size += ev.size
            if sign:
                rec = Record.seal(relay_key, ev, seq, head, now)
            else:
                rec, receipt = Record.unsigned(adm.relay, ev, seq, head, now)
                out.receipts.append(receipt)
            head = rec.hash
            access = apply_access(access, ev, seq)
            if tentative and ev.kind not in CONTROL_KINDS:
                state = ns.apply(state, rec)  # later events in this batch see this one
            in_batch[ev.id] = seq
            out.records.append((i, rec, record_line(rec) if sign else ""))
        return out

    def _open(self, opening: Event, relay_key: Keypair, now: int,
              adm: Admission) -> tuple[Record, str, Access, Any]:
        """Seal the relay's ``opening`` as seq 1 of this empty feed: its record, wire JSON and
        the access and state after it (a mutable state is left alone: only control events open
        feeds of such namespaces)."""
        admit(self.ns, self.state, self.access, opening, relay_key.public_hex, 1, adm, fixed_access=self.fixed_access)
        rec = Record.seal(relay_key, opening, 1, self.head, now)
        state = self.state
        if self.tentative and opening.kind not in CONTROL_KINDS:
            state = self.ns.apply(state, rec)
        return rec, record_line(rec), apply_access(self.access, opening, 1), state


def fold_records(ns: Namespace[Any], feed: str, records: Iterable[Record]) -> FeedCore:
    """A core that has folded ``records`` (in the order given, unchecked)."""
    core = FeedCore(feed, ns, id_cache=0)
    for rec in records:
        core.fold(rec)
    return core


__all__ = ["ID_CACHE", "Committed", "FeedCore", "Link", "Sealed", "admit", "fold_records", "link", "record_frame"]
