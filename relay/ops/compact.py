"""Retention with compaction: ``colony compact`` (docs/operations.md, "Retention and compaction").

Every feed keeps all its records by default. A ``doc/`` feed may be compacted offline: its
records 1..M (M = head - keep) are folded into the document state (each Yjs update checked first
in the sandbox, ``collab.sandbox_supervisor``: one the engine fails on is left out of the state
and listed as ``quarantined`` in the base's meta, as the relay does at load), sealed as a relay-signed
:class:`collab.events.Snapshot` at (M, hash of record M), stored as the feed's *base*, and
deleted, atomically (``Storage.delete_through``). Record M+1's ``prev`` is the base's ``head``,
so a reader verifies the base's signature and then the chain from M+1.

Other namespaces are refused: their derived state is not a document a snapshot can stand for.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from collab.errors import ChainError, ColonyError
from collab.events import Record, Snapshot, namespace_of, unb64
from collab.feedcore import FeedCore
from collab.keys import Keypair
from collab.namespaces import default_registry
from collab.sandbox_supervisor import Sandbox

from relay.storage.base import Storage, StoredBase

READ_PAGE = 1000
COMPACTABLE = ("doc",)


class CompactError(ColonyError):
    """The feed cannot be compacted (nothing was changed)."""


@dataclass(frozen=True)
class CompactResult:
    feed: str
    head: int
    base: int  # seq of the base after compaction (0: none)
    deleted: int


async def compact_feed(storage: Storage, relay_key: Keypair, feed: str, keep: int) -> CompactResult:
    """Compact ``feed`` so that at most ``keep`` records follow its base."""
    if keep < 1:
        raise CompactError("--keep must be at least 1 (the head record is never deleted)")
    ns_name = namespace_of(feed)
    if ns_name not in COMPACTABLE:
        raise CompactError(f"{feed}: only doc/ feeds can be compacted (the state of a {ns_name}/ feed is "
                           "not a snapshot of its chain); its records are kept")
    head = await storage.head(feed)
    if head is None or head.seq == 0:
        raise CompactError(f"{feed}: no such feed in the store")
    old = await storage.load_base(feed)
    old_seq = old.seq if old is not None else 0
    upto = head.seq - keep
    if upto <= old_seq:
        return CompactResult(feed, head.seq, old_seq, 0)
    ns = default_registry().for_feed(feed)
    core = FeedCore(feed, ns, id_cache=0)
    if old is not None:
        if not old.snap.verify():
            raise CompactError(f"{feed}: the stored base does not verify; refusing to build on it")
        core.restore(old.seq, old.snap.head, old.snap.state, old.meta)
    quarantined: list[int] = []
    async with Sandbox() as sandbox:  # the Yjs engine in a child: a poisonous record never crashes this
        while core.seq < upto:
            rows = await storage.read(feed, core.seq, min(READ_PAGE, upto - core.seq))
            if not rows:
                break
            recs = [Record.from_wire(json.loads(row.data), verify_sigs=False) for row in rows]
            bad = await _vet(sandbox, core, recs)
            for rec in recs:
                if rec.seq in bad and core.link(rec) == "next":  # in the chain, out of the document
                    core.skip(rec)
                    quarantined.append(rec.seq)
                    continue
                try:
                    core.extend(rec)
                except ChainError:
                    raise CompactError(f"{feed}: stored record {rec.seq} does not continue the chain "
                                       f"at {core.seq}") from None
    if core.seq != upto:
        raise CompactError(f"{feed}: the store returned records up to seq {core.seq}, expected {upto}")
    snap = Snapshot.seal(relay_key, feed, upto, core.head, ns.dump(core.state) or b"")
    extra = {"quarantined": quarantined} if quarantined else {}
    base = StoredBase(snap, json.dumps({"access": core.access.to_json(), **extra}))
    deleted = await storage.delete_through(feed, upto, base)
    return CompactResult(feed, head.seq, upto, deleted)


async def _vet(sandbox: Sandbox, core: FeedCore, recs: list[Record]) -> set[int]:
    """The seqs of ``recs`` whose Yjs update the engine fails on, checked in order on the state
    folded so far (the relay's load does the same: ``relay.core.worker``)."""
    docs = [r for r in recs if r.event.kind == "doc.update"]
    if not docs:
        return set()
    state = core.state
    updates = []
    for r in docs:
        try:
            updates.append(unb64(r.event.body["update"]))
        except (KeyError, TypeError, ValueError):
            updates.append(b"")  # not a doc update body: the engine refuses it
    verdicts = await sandbox.check(core.feed, state.tag, updates, state.state_update, full=True)
    return {r.seq for r, v in zip(docs, verdicts, strict=True) if not v.ok}


async def compact(storage: Storage, relay_key: Keypair, feeds: list[str] | None, keep: int) -> list[CompactResult]:
    """Compact the named feeds, or (``feeds=None``) every doc/ feed in the store."""
    if feeds is None:
        from relay.ops.backup import all_feeds

        feeds = [f for f in await all_feeds(storage) if namespace_of(f) in COMPACTABLE]
    return [await compact_feed(storage, relay_key, f, keep) for f in feeds]
