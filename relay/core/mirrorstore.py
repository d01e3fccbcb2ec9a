"""Storing the records of a feed another relay homes, as received (docs/federation.md, Mirrors).

The federation's mirrors (``relay.federation.mirror``) verify the home's records and hand them
to the feed's worker (``FeedRuntime.mirror``); the worker stores them here, one append per batch,
and commits them as if it had sealed them itself. A record that does not extend our head fails
with :class:`MirrorConflict`.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from collab.errors import ColonyError, Unavailable
from collab.events import Record
from collab.feedcore_chain import link

from relay.storage.base import HeadMoved

if TYPE_CHECKING:
    from relay.core.worker import FeedRuntime

MAX_APPEND_ATTEMPTS = 16


class MirrorConflict(ColonyError):
    """A mirrored record does not extend our head; ``stored`` is our record at its seq, if any."""

    def __init__(self, message: str, stored: str | None = None) -> None:
        super().__init__(message)
        self.stored = stored


@dataclass(slots=True)
class MirrorJob:
    rec: Record  # sealed by the feed's home relay, verified by relay.federation.mirror
    line: str
    fut: asyncio.Future[None]


def _ok(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _fail(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


async def store_mirrored(rt: FeedRuntime, batch: list[MirrorJob]) -> None:
    """Append the home's records verbatim (one append per batch), then commit as if sealed here."""
    core, storage, feed = rt.core, rt.storage, rt.feed
    for _ in range(MAX_APPEND_ATTEMPTS):
        todo: list[MirrorJob] = []
        seq, head = core.seq, core.head
        for m in batch:
            r = m.rec
            if r.seq <= core.seq:  # another process of this site stored it first: the same one?
                rows = await storage.read(feed, r.seq - 1, 1)
                row = rows[0] if rows and rows[0].seq == r.seq else None
                if row is not None and row.hash == r.hash:
                    _ok(m.fut)
                else:
                    stored = row.data if row else None
                    _fail(m.fut, MirrorConflict(f"{feed}#{r.seq} differs from ours", stored))
            elif link(seq, head, r) == "next":
                todo.append(m)
                seq, head = r.seq, r.hash
            else:
                _fail(m.fut, MirrorConflict(f"{feed}#{r.seq} does not extend head {seq}"))
        if not todo:
            return
        bad = await rt.vet_stored([m.rec for m in todo])  # the Yjs sandbox (doc feeds): quarantine, not refuse
        try:
            await storage.append(feed, core.seq, [(m.rec, m.line) for m in todo])
        except HeadMoved as moved:
            await rt.take_moved(moved)
            batch = todo
            continue
        run: list[tuple[Record, str]] = []
        for m in todo:  # the home's chain is kept whole; a quarantined record is left out of the fold
            if m.rec.seq in bad:
                rt.commit(run)
                run = []
                rt.skip(m.rec, bad[m.rec.seq], m.line)
            else:
                run.append((m.rec, m.line))
        rt.commit(run)
        for m in todo:
            _ok(m.fut)
        await rt.maybe_snapshot()
        return
    for m in batch:
        _fail(m.fut, Unavailable("the feed is too contended right now; retry"))
