"""What applied Yjs updates of a ``doc/`` feed left pending, and when to look at it again.

:class:`Pending` keeps, after folding, the part of each update the document could not integrate
(its diff against the document's state vector), indexed by one clock the part waits for: an
entry is looked at again only when the state vector passes that clock, never on every update
(``collab.namespaces.doc_pending`` bounds how much may wait and admits updates in O(update)).

The clock an entry waits for is one only the rest of the log can bring (:func:`_blocker`): the
writers' groups of one entry can depend on one another, and so can two entries (an update sent
out of order can carry what an earlier pending one needs, and need what that one carries). An
entry that waits for what another entry holds is merged with it, so a set of parts that would
integrate together is one entry and is applied again as one; snapshot loading (which applies
everything at once) and folding record by record then reach the same state (the property test in
tests/collab/namespaces/test_doc_pending.py).
"""
from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, get_update, merge_updates

from ..lib0 import Decoder
from .doc_pending import Group, Scan, clocks, probe, read_probe, read_struct, scan


@dataclass(slots=True)
class _Entry:
    rest: bytes                 # the part still pending (a diff against the document)
    ranges: int                 # deleted ranges it carries
    wait: tuple[int, int]       # (client, clock) it waits for
    holds: list[tuple[int, int, int]] = field(default_factory=list)  # (client, start, end) of its structs
    count: int = 1              # the updates merged into it


class Pending:
    """What applied updates left pending, each entry indexed by one clock it waits for."""

    __slots__ = ("_next", "_probe", "_waits", "bytes", "count", "entries", "ranges")

    def __init__(self) -> None:
        self.entries: dict[int, _Entry] = {}
        self.bytes = self.ranges = 0
        self.count = 0  # updates that left something pending (merged entries count each one)
        self._waits: dict[int, list[tuple[int, int]]] = {}  # client -> heap of (clock, entry)
        self._probe: bytes | None = None  # clocks()'s probe for the clients in _waits, built once per set
        self._next = 0

    def __len__(self) -> int:
        """The updates waiting (what ``max_doc_pending_updates`` bounds)."""
        return self.count

    def __iter__(self) -> Iterator[bytes]:
        """The pending parts (what a snapshot or a sync step 2 merges in)."""
        return (e.rest for e in self.entries.values())

    def parts(self) -> list[bytes]:
        return list(self)

    def add(self, update: bytes, sv: bytes, count: int = 1) -> bytes | None:
        """Keep what ``update`` (``count`` updates) left pending in a document whose state vector
        is ``sv`` (now). If nothing it needs is missing (yrs left it pending all the same), the
        part to apply again: ``update``'s, merged with any entry it waited for."""
        rest = get_update(update, sv)
        while True:
            wait, ranges, holds = _first_wait(rest, sv)
            if wait is None:
                return None
            other = None if wait[2] else self._holder(wait[0], wait[1] - 1)
            if other is None:
                break
            entry = self._drop(other)
            count += entry.count
            rest = get_update(merge_updates(entry.rest, rest), sv)  # they wait as one
        e = self._next
        self._next += 1
        self.entries[e] = _Entry(rest, ranges, (wait[0], wait[1]), holds, count)
        self.count += count
        self.bytes += len(rest)
        self.ranges += ranges
        heap = self._waits.get(wait[0])
        if heap is None:
            heap = self._waits[wait[0]] = []
            self._probe = None
        heapq.heappush(heap, (wait[1], e))
        return rest if wait[2] else None

    def _holder(self, client: int, clock: int) -> int | None:
        """The entry whose structs hold ``clock`` of ``client``, if one does."""
        for e, entry in self.entries.items():
            if any(c == client and start <= clock < end for c, start, end in entry.holds):
                return e
        return None

    def _drop(self, e: int) -> _Entry:
        entry = self.entries.pop(e)
        self.count -= entry.count
        self.bytes -= len(entry.rest)
        self.ranges -= entry.ranges
        client, clock = entry.wait
        heap = self._waits[client]
        heap.remove((clock, e))
        if heap:
            heapq.heapify(heap)
        else:
            del self._waits[client]
            self._probe = None
        return entry

    def advanced(self, doc: Doc[Any], sv: bytes) -> bytes:
        """The document's state vector moved to ``sv``: look again at the entries whose clock it
        passed; return the state vector after that.

        An entry whose dependencies are all there now is applied to the document again: yrs
        does not always integrate a pending struct once what it waited for arrives
        (tests/collab/namespaces/test_doc_pending.py finds such orders), and loading a snapshot
        (which applies everything at once) would integrate it, so folding must too."""
        while self._waits:
            if self._probe is None:
                self._probe = probe(self._waits)
            have = read_probe(self._probe, self._waits, sv)
            due = [e for client, clock in have.items() for c, e in self._waits[client] if c <= clock]
            again = []
            for e in due:
                if e not in self.entries:  # merged into another entry by an earlier add of this round
                    continue
                entry = self._drop(e)
                part = self.add(entry.rest, sv, entry.count)
                if part is not None:
                    again.append(part)
            if not again:
                break
            for rest in again:
                doc.apply_update(rest)
            now = doc.get_state()
            if now == sv:
                break
            sv = now
        return sv


def _first_wait(rest: bytes, sv: bytes) -> tuple[tuple[int, int, bool] | None, int, list[tuple[int, int, int]]]:
    """What the diff ``rest`` (of an update against the state vector ``sv``) waits for:
    ``(client, clock, ready)`` or None if it is integrated (no structs left, every deletion below
    ``sv``); the deleted ranges it carries; the clock ranges its structs hold.

    With structs left, see :func:`_blocker`: the wait is something from outside ``rest`` (its
    groups can depend on one another, so a dependency ``rest`` itself would provide once it
    integrates is never waited for). ``ready``: nothing is missing, yet yrs left it pending
    (apply it again). Without structs, it waits for a deletion beyond ``sv``."""
    r = Decoder(rest)
    if r.var_uint():
        r.var_uint()
        client, clock = r.var_uint(), r.var_uint()
        try:
            s = scan(rest)
            groups = None if s.cut else _struct_groups(rest)
        except ValueError:
            s, groups = Scan([], {}, 0, -1, "content"), None
        if groups is None:  # cannot tell what it needs: one past its own clock will do
            return (client, clock + 1, False), (s.ranges if s.cut == "ranges" else len(rest) // 2), []
        return _blocker(groups, sv) or (client, clock + 1, True), s.ranges, _holds(groups)
    ends: dict[int, int] = {}
    ranges = 0
    for _ in range(r.var_uint()):
        client, end, n = r.var_uint(), 0, r.var_uint()
        ranges += n
        for _ in range(n):
            clock = r.var_uint()
            end = max(end, clock + r.var_uint())
        ends[client] = end
    have = clocks(sv, ends)
    for client, end in ends.items():
        if have[client] < end:
            return (client, end, False), ranges, []
    return None, ranges, []


def _struct_groups(update: bytes) -> list[list[Group]]:
    """Each writer's structs of ``update``, one :class:`Group` per struct (what it needs; ``gap``
    for a Skip), writers in the update's order. Only for pending entries (bounded by :func:`scan`)."""
    r = Decoder(update)
    u = r.var_uint
    out: list[list[Group]] = []
    for _ in range(u()):
        n, client, clock = u(), u(), u()
        structs: list[Group] = []
        for _ in range(n):
            g = Group(client, clock, clock)
            g.end = clock = clock + read_struct(r, client, g)
            structs.append(g)
        out.append(structs)
    return out


def _holds(groups: list[list[Group]]) -> list[tuple[int, int, int]]:
    """The clock ranges the structs of ``groups`` hold, ``(client, start, end)``, adjacent ones
    joined (a Skip is held by nobody): about one range per writer."""
    out: list[tuple[int, int, int]] = []
    for gs in groups:
        for g in gs:
            if g.gap:
                continue
            if out and out[-1][0] == g.client and out[-1][2] == g.start:
                out[-1] = (g.client, out[-1][1], g.end)
            else:
                out.append((g.client, g.start, g.end))
    return out


def _blocker(groups: list[list[Group]], sv: bytes) -> tuple[int, int, bool] | None:
    """``(client, clock, False)``: a clock the document must reach, from outside the structs of
    ``groups``, before any more of them can integrate; None if every struct could integrate now.

    Yjs's rule struct by struct (its writer's clock, then the ids it needs), the groups helping
    one another until nothing moves; then, from the first stuck struct, dependencies that another
    stuck group would provide are followed to one that only the rest of the log can. A cycle
    (crafted input: never integrates) waits on its first stuck struct."""
    named = {g.client for gs in groups for g in gs} | {c for gs in groups for g in gs for c, _ in g.needs}
    have = clocks(sv, named)
    pos = [0] * len(groups)
    moved = True
    while moved:
        moved = False
        for i, gs in enumerate(groups):
            while pos[i] < len(gs):
                g = gs[pos[i]]
                if g.gap or g.start > have[g.client] or any(have[c] <= k for c, k in g.needs):
                    break
                have[g.client] = max(have[g.client], g.end)
                pos[i] += 1
                moved = True
    stuck = {gs[pos[i]].client: gs[pos[i]] for i, gs in enumerate(groups) if pos[i] < len(gs)}
    if not stuck:
        return None

    def wait(g: Group) -> tuple[int, int]:
        if g.gap:  # a Skip: the skipped clocks come from elsewhere
            return g.client, g.end
        if g.start > have[g.client]:
            return g.client, g.start
        c, k = next((c, k) for c, k in g.needs if have[c] <= k)
        return c, k + 1

    first = next(iter(stuck.values()))
    g, seen = first, {first.client}
    while True:
        c, k = wait(g)
        other = stuck.get(c)
        if other is None or other is g or other.start >= k:
            return c, k, False  # only the log can bring it
        if c in seen:  # a cycle: it never integrates; wait where it started
            c, k = wait(first)
            return c, k, False
        seen.add(c)
        g = other


__all__ = ["Pending"]
