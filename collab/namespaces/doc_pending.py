"""Pending Yjs updates of a ``doc/`` feed: bounded per document, and checked in O(update).

A Yjs update can name dependencies a document does not hold yet: structs after a gap in their
writer's clock, or whose origin, right origin or parent is another writer's item not seen yet,
and deletions of ids not seen yet. Yjs keeps those parts *pending* and integrates them once the
dependencies arrive. A client can publish such updates on purpose and never send what they
wait for; without a bound, each of them makes every later update dearer (issue 12, item 2).

* :func:`scan` reads the struct headers of a v1 update (clients, clock ranges, the ids each
  struct needs, the delete set) without building the structs, in O(update) and at most
  :data:`MAX_SCAN_STRUCTS` structs and :data:`MAX_SCAN_RANGES` deleted ranges (beyond that the
  update counts as "cannot tell": it may wait).
* :func:`clocks` reads a few clients' clocks out of a state vector with one diff in Rust
  (``pycrdt.get_update`` of a probe update), so the document's size does not enter the
  Python-side cost.
* :class:`Admission` decides, before an update is sealed, whether it may leave pending parts:
  it integrates if every struct group continues its writer's clock and every id it needs is in
  the document, in an earlier group of the same update, or in an update of the same batch that
  integrates. Anything else (or anything :func:`scan` cannot tell) counts as pending, and is
  refused with ``too_large`` once the document's pending updates would exceed the bound
  (:class:`PendingBound`: ``max_doc_pending_bytes``, ``max_doc_pending_updates``,
  ``max_doc_pending_deletes`` at /limits).
* :class:`collab.namespaces.doc_waiting.Pending` holds, after folding, what applied updates left
  pending, each entry indexed by one clock it waits for.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycrdt import get_update

from ..errors import TooLarge
from ..lib0 import Decoder, var_uint

if TYPE_CHECKING:
    from .doc_waiting import Pending

MAX_SCAN_STRUCTS = 128    # structs read per update before it counts as "cannot tell" (about 5 us each)
MAX_SCAN_RANGES = 8192    # deleted ranges read per update (about 0.5 us each)
_PROBE_LEN = 2**32 - 1    # yrs clocks are 32-bit: a probe struct from clock 0 this long covers any clock
_MAX_PASSES = 8           # rounds over an update's groups that depend on one another
_SCRATCH = "doc.pending"  # this module's entry in Admission.scratch


@dataclass(frozen=True, slots=True)
class PendingBound:
    """How much of one document may wait for dependencies that have not arrived.

    Pending updates are counted, measured in bytes (their diff against the document, as kept
    for snapshots) and in deleted ranges; an update that may add to them is refused with
    ``too_large`` when the document would then hold more than ``max_updates`` of them,
    ``max_bytes`` in all or ``max_deletes`` deleted ranges. Ranges have a bound of their own
    because Yjs tries every pending deletion again on every update it applies (about 9 ns a
    range each time), where pending structs cost nothing until what they wait for arrives."""

    max_bytes: int = 1 << 20
    max_updates: int = 256
    max_deletes: int = 4096


DEFAULT_BOUND = PendingBound()


@dataclass(slots=True)
class Group:
    """One writer's structs in an update: clocks ``[start, end)`` and the ids they need from
    other writers (``(client, clock)``: the document must hold that clock of that client)."""

    client: int
    start: int
    end: int
    needs: list[tuple[int, int]] = field(default_factory=list)
    gap: bool = False  # a Skip struct: the update itself leaves a hole in this writer's clock


@dataclass(slots=True)
class Scan:
    groups: list[Group]
    deletes: dict[int, int]  # client -> end clock of its last deleted range
    ranges: int              # deleted ranges in all (past the budget: the budget + 1)
    ds_at: int               # byte offset of the delete set (-1: not reached)
    cut: str = ""            # "structs" or "ranges": the scan stopped at that budget


def scan(update: bytes, limit: int = MAX_SCAN_STRUCTS, range_limit: int = MAX_SCAN_RANGES) -> Scan:
    """The struct headers and delete set of a v1 update; ValueError if it does not decode (or
    holds content this scan does not know). Past ``limit`` structs or ``range_limit`` deleted
    ranges it stops and says so in :attr:`Scan.cut`."""
    r = Decoder(update)
    u, budget = r.var_uint, limit
    groups: list[Group] = []
    for _ in range(u()):
        n, client, clock = u(), u(), u()
        budget -= n
        if budget < 0:
            return Scan([], {}, 0, -1, "structs")
        g = Group(client, clock, clock)
        for _ in range(n):
            g.end += read_struct(r, client, g)
        groups.append(g)
    ds_at = r.pos
    deletes: dict[int, int] = {}
    ranges, budget = 0, range_limit
    for _ in range(u()):
        client, n = u(), u()
        budget -= n
        ranges += n
        if budget < 0:
            return Scan(groups, deletes, range_limit + 1, ds_at, "ranges")
        end = 0
        for _ in range(n):
            clock = u()
            end = max(end, clock + u())
        deletes[client] = max(deletes.get(client, 0), end)
    return Scan(groups, deletes, ranges, ds_at)


def read_struct(r: Decoder, client: int, g: Group) -> int:
    """Read one struct; record what it needs in ``g``; return its length in clock units."""
    buf = r.buf
    if r.pos >= len(buf):
        raise ValueError("truncated struct")
    info = buf[r.pos]
    r.pos += 1
    ref = info & 0x1F
    if ref == 0:  # GC
        return r.var_uint()
    if ref == 10:  # Skip
        g.gap = True
        return r.var_uint()
    u = r.var_uint
    if info & 0x80:  # origin
        c, k = u(), u()
        if c != client:
            g.needs.append((c, k))
    if info & 0x40:  # right origin
        c, k = u(), u()
        if c != client:
            g.needs.append((c, k))
    if not info & 0xC0:
        if u() == 1:  # parent is a root type, by name
            r.var_bytes()
        else:
            c, k = u(), u()
            if c != client:
                g.needs.append((c, k))
        if info & 0x20:  # parent sub (map key)
            r.var_bytes()
    return _content(r, ref)


def _content(r: Decoder, ref: int) -> int:
    u = r.var_uint
    if ref == 4:  # String: its length is counted in UTF-16 code units
        return len(r.var_string().encode("utf-16-le")) // 2
    if ref == 1:  # Deleted
        return u()
    if ref == 2:  # JSON
        n = u()
        for _ in range(n):
            r.var_bytes()
        return n
    if ref == 8:  # Any
        n = u()
        for _ in range(n):
            _any(r, 0)
        return n
    if ref in (3, 5):  # Binary, Embed
        r.var_bytes()
    elif ref == 6:  # Format: key, value
        r.var_bytes()
        r.var_bytes()
    elif ref == 7:  # Type: type ref, then a name for XmlElement (3) and XmlHook (5)
        t = u()
        if t in (3, 5):
            r.var_bytes()
        elif t not in (0, 1, 2, 4, 6):
            raise ValueError(f"type ref {t}")
    elif ref == 9:  # Doc: guid, options
        r.var_bytes()
        _any(r, 0)
    else:
        raise ValueError(f"content ref {ref}")
    return 1


def _any(r: Decoder, depth: int) -> None:
    """Skip one lib0 ``any`` value."""
    if depth > 32 or r.pos >= len(r.buf):
        raise ValueError("any value too deep or truncated")
    t = r.buf[r.pos]
    r.pos += 1
    if t in (127, 126, 121, 120):
        return
    if t == 125:  # signed varint: bytes until one without the continuation bit
        while r.pos < len(r.buf) and r.buf[r.pos] & 0x80:
            r.pos += 1
        r.pos += 1
    elif t in (124, 123, 122):
        r.pos += {124: 4, 123: 8, 122: 8}[t]
    elif t in (119, 116):
        r.var_bytes()
    elif t == 118:
        for _ in range(r.var_uint()):
            r.var_bytes()
            _any(r, depth + 1)
    elif t == 117:
        for _ in range(r.var_uint()):
            _any(r, depth + 1)
    else:
        raise ValueError(f"any type {t}")
    if r.pos > len(r.buf):
        raise ValueError("truncated any value")


def clocks(sv: bytes, clients: Iterable[int]) -> dict[int, int]:
    """``client -> clock`` in the encoded state vector ``sv`` (0 when absent), for ``clients``.

    One Rust diff of a probe (a GC struct from clock 0 for each client) against ``sv`` leaves each
    probe starting at that client's clock: the Python side costs O(len(clients)), not O(sv)."""
    want = set(clients)
    return read_probe(probe(want), want, sv) if want else {}


def probe(clients: Iterable[int]) -> bytes:
    want = sorted(clients)
    return (var_uint(len(want)) + b"".join(b"\x01" + var_uint(c) + b"\x00\x00" + var_uint(_PROBE_LEN) for c in want)
            + b"\x00")


def read_probe(probe: bytes, clients: Iterable[int], sv: bytes) -> dict[int, int]:
    rest = Decoder(get_update(probe, sv))
    out = dict.fromkeys(clients, _PROBE_LEN)
    for _ in range(rest.var_uint()):
        n, client, clock = rest.var_uint(), rest.var_uint(), rest.var_uint()
        out[client] = clock
        for _ in range(n):
            rest.pos += 1  # info: a GC
            rest.var_uint()
    return out


def integrable(s: Scan, have: dict[int, int]) -> bool:
    """Whether a document whose clocks are ``have`` (covering every client ``s`` names) would
    integrate the whole scanned update: Yjs's rule (a struct integrates once its writer's earlier
    clocks and every id it needs are there), applied per group, groups of the update helping one
    another. ``have`` is updated with the clocks the update reaches."""
    todo = list(s.groups)
    for _ in range(_MAX_PASSES):
        if not todo:
            break
        left = []
        for g in todo:
            if g.gap or g.start > have[g.client] or any(have.get(c, 0) <= k for c, k in g.needs):
                left.append(g)
            else:
                have[g.client] = max(have[g.client], g.end)
        if len(left) == len(todo):
            return False
        todo = left
    if todo:
        return False
    return all(have.get(c, 0) >= end for c, end in s.deletes.items())


def _named(s: Scan) -> set[int]:
    out = {g.client for g in s.groups} | set(s.deletes)
    for g in s.groups:
        out.update(c for c, _ in g.needs)
    return out


class Admission:
    """One batch's view of a document for :meth:`check` (kept in ``Admission.scratch``)."""

    __slots__ = ("added", "bytes", "known", "ranges", "reached", "sv")

    def __init__(self) -> None:
        self.reached: dict[int, int] = {}  # clocks the batch's integrating updates reach
        self.added = self.bytes = self.ranges = 0
        self.sv: bytes | None = None  # the state vector ``known`` was read from
        self.known: dict[int, int] = {}  # client -> clock in ``sv``, for the clients asked about so far

    def _clocks(self, sv: bytes, named: set[int]) -> dict[int, int]:
        """:func:`clocks` of ``named`` in ``sv``, one Rust diff per batch for the clients it has not
        read yet (a batch is checked against one state vector: the document folds after it)."""
        if sv != self.sv:
            self.sv, self.known = sv, {}
        known = self.known
        missing = named - known.keys()
        if missing:
            known.update(clocks(sv, missing))
        return {c: known[c] for c in named}

    @classmethod
    def of(cls, scratch: dict[str, Any]) -> Admission:
        adm = scratch.get(_SCRATCH)
        if not isinstance(adm, Admission):
            adm = scratch[_SCRATCH] = Admission()
        return adm

    def check(self, update: bytes, sv: bytes, pending: Pending, bound: PendingBound) -> None:
        """Raise :class:`TooLarge` if ``update`` may leave pending parts the bound has no room for."""
        try:
            s = scan(update)
        except ValueError:  # cannot tell: count it as pending
            s = Scan([], {}, 0, -1, "content")
        ranges = s.ranges  # 0 when not scanned (too many structs): its deletions count once folded
        if not s.cut:
            named = _named(s)
            have = self._clocks(sv, named)
            for c in named & self.reached.keys():
                have[c] = max(have[c], self.reached[c])
            if integrable(s, have):
                self.reached.update({g.client: have[g.client] for g in s.groups})
                return
        count = len(pending) + self.added + 1
        size = pending.bytes + self.bytes + len(update)
        deletes = pending.ranges + self.ranges + ranges
        if count > bound.max_updates:
            raise TooLarge(f"the document holds {count - 1} updates waiting for dependencies that have not "
                           f"arrived; the limit is {bound.max_updates} (max_doc_pending_updates)")
        if size > bound.max_bytes:
            raise TooLarge(f"updates waiting for dependencies would take {size} bytes in this document; "
                           f"the limit is {bound.max_bytes} (max_doc_pending_bytes)")
        if deletes > bound.max_deletes:
            raise TooLarge(f"deletions waiting for dependencies would be {deletes} ranges in this document; "
                           f"the limit is {bound.max_deletes} (max_doc_pending_deletes)")
        self.added += 1
        self.bytes += len(update)
        self.ranges += ranges


__all__ = ["DEFAULT_BOUND", "MAX_SCAN_RANGES", "MAX_SCAN_STRUCTS", "Admission", "Group", "PendingBound", "Scan",
           "clocks", "integrable", "probe", "read_probe", "read_struct", "scan"]
