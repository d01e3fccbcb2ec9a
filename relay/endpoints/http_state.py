"""``GET /feeds/{feed}/state?at=SEQ``: a feed's derived state as it was at an earlier seq.

The viewer's time-travel slider asks for this. The state at ``at`` is rebuilt from the feed's
stored records with the fold the relay itself uses (:class:`collab.feedcore.FeedCore`, each
record checked to extend the chain) and answered as the namespace's
JSON view (``{"text": ...}`` for ``doc/`` feeds, ``null`` for namespaces without a view).

Cost, and how it is bounded (docs/protocol.md section 15):

* ``at`` at or above the head loaded in this process is answered from the live state: no replay.
* Otherwise the replay starts from the nearest *checkpoint* at or below ``at`` (the namespace's
  ``dump`` of the state, taken every :data:`CHECKPOINT_EVERY` seqs during earlier replays of
  the feed) or from seq 0, so a request folds at most ``at`` records, and at most
  :data:`CHECKPOINT_EVERY` once an earlier request has walked past that point. Checkpoints are
  kept in an LRU with a total budget of :data:`CHECKPOINT_BYTES` bytes.
* A request that would fold more than :data:`MAX_REPLAY` records answers ``413 too_large``
  (a feed that long needs stepping through in several requests: each one leaves checkpoints).
* The last :data:`RESULT_CACHE` answers are cached (history never changes: the records up to
  ``at`` are immutable), so a slider going back and forth costs nothing.
* Replays run one at a time, on one worker thread (records are read from storage on the event
  loop page by page, and folded on the worker), so time travel uses at most one core and never
  stalls the relay's event loop for longer than a storage page read.

A feed the caller may not read (``members``, ``dm/``) is refused with 403, like ``/events``
(a signed request, docs/protocol.md section 15.1, reads as its key).
"""
from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from collab.errors import ChainError, ColonyError, InvalidEvent
from collab.events import GENESIS, Record
from collab.feedcore import FeedCore
from collab.namespaces import Namespace

if TYPE_CHECKING:
    from relay.server import Relay


CHECKPOINT_EVERY = 1000           # seqs between checkpoints of a replayed feed
CHECKPOINT_BYTES = 64 * 1024 * 1024  # total size of the checkpoints kept (LRU over all feeds)
MAX_REPLAY = 200_000              # records one request may fold (about 10 s of one core)
RESULT_CACHE = 32                 # (feed, at) answers kept
PAGE = 1000                       # records per storage read during a replay

_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="colony-state")


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    seq: int
    head: str    # hash of the record at seq: a replay resumed here must link to it
    state: bytes  # Namespace.dump of the state after seq


class StateCache:
    """Checkpoints and recent answers of one relay; one replay at a time."""

    def __init__(self, checkpoint_every: int = CHECKPOINT_EVERY, checkpoint_bytes: int = CHECKPOINT_BYTES,
                 max_replay: int = MAX_REPLAY, results: int = RESULT_CACHE) -> None:
        self.checkpoint_every, self.checkpoint_bytes = checkpoint_every, checkpoint_bytes
        self.max_replay, self.results_max = max_replay, results
        self._checkpoints: OrderedDict[tuple[str, int], _Checkpoint] = OrderedDict()
        self._cp_bytes = 0
        self._results: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._lock = asyncio.Lock()
        self.replayed = 0  # records folded so far (tests and metrics)

    # -- answers ---------------------------------------------------------------------------
    def cached(self, feed: str, at: int) -> dict[str, Any] | None:
        hit = self._results.get((feed, at))
        if hit is not None:
            self._results.move_to_end((feed, at))
        return hit

    def remember(self, feed: str, at: int, answer: dict[str, Any]) -> None:
        self._results[(feed, at)] = answer
        self._results.move_to_end((feed, at))
        while len(self._results) > self.results_max:
            self._results.popitem(last=False)

    # -- checkpoints -----------------------------------------------------------------------
    def _nearest(self, feed: str, at: int) -> _Checkpoint | None:
        best = None
        for (f, s), cp in self._checkpoints.items():
            if f == feed and s <= at and (best is None or s > best.seq):
                best = cp
        if best is not None:
            self._checkpoints.move_to_end((feed, best.seq))
        return best

    def _keep(self, feed: str, cp: _Checkpoint) -> None:
        if len(cp.state) > self.checkpoint_bytes // 4:
            return  # one huge document must not flush everything else
        old = self._checkpoints.pop((feed, cp.seq), None)
        if old is not None:
            self._cp_bytes -= len(old.state)
        self._checkpoints[(feed, cp.seq)] = cp
        self._cp_bytes += len(cp.state)
        while self._cp_bytes > self.checkpoint_bytes and self._checkpoints:
            _, dropped = self._checkpoints.popitem(last=False)
            self._cp_bytes -= len(dropped.state)

    def _forget(self, feed: str) -> None:
        for key in [k for k in self._checkpoints if k[0] == feed]:
            self._cp_bytes -= len(self._checkpoints.pop(key).state)

    # -- replay ----------------------------------------------------------------------------
    async def replay(self, relay: Relay, ns: Namespace[Any], feed: str, at: int) -> tuple[Any, int, str]:
        """The namespace view of ``feed`` after record ``at`` (or the last one stored below it),
        with that record's seq and hash."""
        async with self._lock:
            try:
                return await self._replay(relay, ns, feed, at)
            except _Relinked:  # a checkpoint did not link to the stored records: start over
                self._forget(feed)
                return await self._replay(relay, ns, feed, at)

    async def _replay(self, relay: Relay, ns: Namespace[Any], feed: str, at: int) -> tuple[Any, int, str]:
        loop = asyncio.get_running_loop()
        cp = self._nearest(feed, at)
        base = await relay.storage.load_base(feed)  # a compacted feed: its records start after the base
        if base is not None and (cp is None or cp.seq < base.snap.seq):
            cp = _Checkpoint(base.snap.seq, base.snap.head, base.snap.state)
        start = cp.seq if cp else 0
        if at - start > self.max_replay:
            raise TooCostly(f"the state at {at} needs {at - start} records replayed; the limit is "
                            f"{self.max_replay} (ask for an earlier seq first: replays leave checkpoints)")
        rt = await relay.hub.runtime(feed)  # loaded: records the Yjs engine fails on are quarantined
        fold = _Fold(ns, feed, cp, frozenset(getattr(rt.state, "quarantined", ())))
        since = start
        while since < at:
            rows = await relay.storage.read(feed, since, min(PAGE, at - since))
            if not rows:
                break  # fewer records than the head said (another process is behind): fold what exists
            new_cps = await loop.run_in_executor(_worker, fold.apply, [r.data for r in rows], self.checkpoint_every)
            for c in new_cps:
                self._keep(feed, c)
            since = rows[-1].seq
            self.replayed += len(rows)
        return await loop.run_in_executor(_worker, fold.view), fold.seq, fold.head


class TooCostly(ColonyError):
    """Answering would replay more records than the configured limit (HTTP 413 ``too_large``)."""


class _Relinked(ChainError):
    """A checkpoint does not link to the stored records (the fold starts over)."""


class _Fold:
    """Folds records into one namespace state; only ever touched on the worker thread."""

    def __init__(self, ns: Namespace[Any], feed: str, cp: _Checkpoint | None,
                 quarantined: frozenset[int] = frozenset()) -> None:
        self.ns, self.feed, self._cp = ns, feed, cp
        self.quarantined = quarantined  # seqs left out of the fold, as the live feed does
        self.core: FeedCore | None = None  # built on the worker thread (loading a checkpoint costs)
        self.seq, self.head = (cp.seq, cp.head) if cp else (0, GENESIS)

    def _core(self) -> FeedCore:
        if self.core is None:
            self.core = FeedCore(self.feed, self.ns, id_cache=0)
            if self._cp is not None:
                self.core.restore(self._cp.seq, self._cp.head, self._cp.state)
        return self.core

    def apply(self, rows: list[str], every: int) -> list[_Checkpoint]:
        core = self._core()
        out = []
        for data in rows:
            rec = Record.from_wire(json.loads(data), verify_sigs=False)  # our own storage wrote it
            try:
                if rec.seq in self.quarantined:
                    if core.link(rec) != "next":
                        raise ChainError("does not follow")
                    core.skip(rec)
                else:
                    core.extend(rec)
            except ChainError:
                raise _Relinked(f"{self.feed}: record {rec.seq} does not follow {core.seq}") from None
            self.seq, self.head = core.seq, core.head
            if self.seq % every == 0:
                dumped = self.ns.dump(core.state)
                if dumped is not None:
                    out.append(_Checkpoint(self.seq, self.head, dumped))
        return out

    def view(self) -> Any:
        return self.ns.view(self._core().state)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _cache(request: Request) -> StateCache:
    cache: StateCache | None = getattr(request.app.state, "state_cache", None)
    if cache is None:
        cache = request.app.state.state_cache = StateCache()
    return cache


def _has_view(ns: Namespace[Any]) -> bool:
    return type(ns).view is not Namespace.view


async def feed_state(request: Request) -> Response:
    from relay.endpoints.http import _int_param, not_readable, readable_feed  # one parser, one access rule

    relay: Relay = request.app.state.relay
    checked = await readable_feed(request)
    if isinstance(checked, Response):
        return checked
    feed, key = checked
    try:
        at = _int_param(request, "at", 2**53, 0, 2**53)
    except InvalidEvent as exc:
        return _error(400, "invalid", str(exc))
    head = await relay.storage.head(feed)
    if head is None:
        return _error(404, "not_found", f"no records in {feed}")
    rt = await relay.hub.runtime(feed)
    if not rt.access.can_read(key):
        return not_readable(feed)
    ns = rt.ns
    seq = max(rt.seq, head.seq)
    if at >= rt.seq:  # the live state (a newer head on another process shows up within a sync)
        return JSONResponse({"feed": feed, "seq": seq, "at": rt.seq, "hash": rt.head,
                             "state": ns.view(rt.state) if _has_view(ns) else None})
    if at < rt.base_seq:
        return _error(410, "compacted", f"records 1..{rt.base_seq} of {feed} were compacted into a snapshot; "
                                        f"the earliest state there is is at={rt.base_seq}")
    if not _has_view(ns):  # nothing to show, nothing to replay
        rows = await relay.storage.read(feed, at - 1, 1) if at > 0 else []
        return JSONResponse({"feed": feed, "seq": seq, "at": at, "hash": rows[0].hash if rows else GENESIS,
                             "state": None})
    cache = _cache(request)
    answer = cache.cached(feed, at)
    if answer is None:
        if at == 0:
            view, covered, at_hash = ns.view(ns.initial(feed)), 0, GENESIS
        else:
            try:
                view, covered, at_hash = await cache.replay(relay, ns, feed, at)
            except TooCostly as exc:
                return _error(413, "too_large", str(exc))
        answer = {"at": covered, "hash": at_hash, "state": view}
        if covered == at:
            cache.remember(feed, at, answer)
    return JSONResponse({"feed": feed, "seq": seq, **answer})
