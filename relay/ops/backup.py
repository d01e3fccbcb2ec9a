"""Backup and restore: ``colony export`` / ``colony import`` (format in docs/operations.md).

An export is JSON Lines: a header, one line per record (feed order, then seq order, each
record's stored wire JSON verbatim), and a trailer with every feed's head and the record count.
Import verifies the whole file (signatures, ids, dense seqs, the hash chain from GENESIS, the
trailer) before it writes anything, then appends through :class:`Storage` in batches.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from collab import frames
from collab.access import Access
from collab.errors import ColonyError
from collab.events import GENESIS, Record, Snapshot, now_ms
from collab.feedcore_chain import link

from relay.storage.base import FeedHead, Storage, StoredBase

FORMAT = "colony-export/v1"
READ_PAGE = 1000
WRITE_BATCH = 500


class BackupError(ColonyError):
    """The export file (or the target store) is not acceptable; nothing was written."""


@dataclass
class FeedPlan:
    feed: str
    seq: int = 0
    head: str = GENESIS
    existing: int = 0  # records already in the target store (an identical prefix)
    digests: list[bytes] = field(default_factory=list)  # _digest of every record, by seq (after the base)
    base: StoredBase | None = None  # a compacted feed's base (relay/ops/compact.py): records start after it

    @property
    def base_seq(self) -> int:
        return self.base.seq if self.base is not None else 0


@dataclass
class ImportResult:
    feeds: dict[str, int]  # feed -> records written
    skipped: dict[str, int]  # feed -> records already present (identical)

    @property
    def written(self) -> int:
        return sum(self.feeds.values())


def _record_line(feed: str, data: str) -> str:
    return '{"feed":' + json.dumps(feed, ensure_ascii=False) + ',"rec":' + data + "}"


async def all_feeds(storage: Storage) -> list[str]:
    limit = 1000
    while True:  # ``feeds`` has no cursor: widen the window until it is not full
        page = await storage.feeds("", limit)
        if len(page) < limit:
            return sorted(h.feed for h in page)
        limit *= 10


async def write_export(storage: Storage, feeds: Iterable[str] | None, fp: IO[str], relay: str | None = None) -> int:
    """Write every record of ``feeds`` (all feeds when None) to ``fp``; return the record count.

    Each feed is exported up to the head it had when the export reached it, so a store that is
    still being written to yields a consistent prefix of each feed.
    """
    names = sorted(set(feeds)) if feeds is not None else await all_feeds(storage)
    heads: dict[str, FeedHead] = {}
    for name in names:
        h = await storage.head(name)
        if h is None or h.seq == 0:
            raise BackupError(f"{name}: no such feed in the store")
        heads[name] = h
    fp.write(json.dumps({"format": FORMAT, "relay": relay, "created": now_ms(), "feeds": names},
                        ensure_ascii=False, separators=(",", ":")) + "\n")
    count = 0
    trailer: dict[str, dict[str, Any]] = {}
    for name in names:
        stop = heads[name].seq
        since, last = 0, GENESIS
        base = await storage.load_base(name)
        if base is not None:  # compacted: the base stands for records 1..base.seq (docs/operations.md)
            fp.write(json.dumps({"feed": name, "base": base.snap.to_wire(), "access": json.loads(base.meta)["access"]},
                                ensure_ascii=False, separators=(",", ":")) + "\n")
            since, last = base.seq, base.snap.head
        while since < stop:
            rows = await storage.read(name, since, min(READ_PAGE, stop - since))
            if not rows:
                break
            for row in rows:
                fp.write(_record_line(name, row.data) + "\n")
                since, last = row.seq, row.hash
                count += 1
        if since != stop:
            raise BackupError(f"{name}: the store returned records up to seq {since}, but its head is {stop}")
        trailer[name] = {"seq": since, "hash": last}
    fp.write(json.dumps({"end": True, "heads": trailer, "count": count}, separators=(",", ":")) + "\n")
    return count


def _digest(rec: Any) -> bytes:
    """Identity of a record object, independent of key order and whitespace."""
    return hashlib.sha256(json.dumps(rec, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).digest()


def _lines(fp: IO[str]) -> Iterable[tuple[int, str]]:
    for n, raw in enumerate(fp, 1):
        line = raw.rstrip("\n")
        if line.strip():
            yield n, line


def _parse(n: int, line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise BackupError(f"line {n}: not JSON ({exc})") from None


async def verify_export(storage: Storage, fp: IO[str]) -> tuple[dict[str, Any], dict[str, FeedPlan]]:
    """Check the whole file, and the target store against it; raise :class:`BackupError`."""
    it = iter(_lines(fp))
    first = next(it, None)
    if first is None:
        raise BackupError("empty file")
    header = _parse(*first)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise BackupError(f"line 1: not a {FORMAT} file (header format is {found!r})")
    listed = header.get("feeds")
    if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed) or len(set(listed)) != len(listed):
        raise BackupError("line 1: header 'feeds' must be a list of distinct feed names")
    plans: dict[str, FeedPlan] = {}
    trailer: Any = None
    cur: FeedPlan | None = None
    for n, line in it:
        if trailer is not None:
            raise BackupError(f"line {n}: content after the trailer")
        obj = _parse(n, line)
        if not isinstance(obj, dict):
            raise BackupError(f"line {n}: not an object")
        if "end" in obj:
            trailer = obj
            continue
        if "base" in obj:
            feed = obj.get("feed")
            if set(obj) != {"feed", "base", "access"} or not isinstance(feed, str) or feed in plans:
                raise BackupError(f"line {n}: a base line has exactly the fields feed, base, access and comes "
                                  "before the feed's records")
            if feed not in listed:
                raise BackupError(f"{feed}: not listed in the header (line {n})")
            try:
                snap = Snapshot.from_wire(obj["base"])
                access = Access.from_json(obj["access"])
            except (ColonyError, KeyError, TypeError, ValueError) as exc:
                raise BackupError(f"{feed} base (line {n}): invalid or unsigned snapshot: {exc}") from None
            if snap.feed != feed:
                raise BackupError(f"{feed} base (line {n}): the snapshot is of feed {snap.feed!r}")
            cur = plans[feed] = FeedPlan(feed, snap.seq, snap.head,
                                         base=StoredBase(snap, json.dumps({"access": access.to_json()})))
            continue
        feed, wire = obj.get("feed"), obj.get("rec")
        if set(obj) != {"feed", "rec"} or not isinstance(feed, str):
            raise BackupError(f"line {n}: a record line has exactly the fields 'feed' and 'rec'")
        if cur is None or cur.feed != feed:
            if feed in plans:
                raise BackupError(f"{feed}: records are not contiguous (line {n}): the file is out of order")
            if feed not in listed:
                raise BackupError(f"{feed}: not listed in the header (line {n})")
            cur = plans[feed] = FeedPlan(feed)
        seq = wire.get("seq") if isinstance(wire, dict) else None
        where = f"{feed} seq {seq} (line {n})"
        try:
            rec = Record.from_wire(wire, verify_sigs=True)
        except ColonyError as exc:
            raise BackupError(f"{where}: invalid record: {exc}") from None
        if rec.feed != feed:
            raise BackupError(f"{where}: the record's event is for feed {rec.feed!r}")
        how = link(cur.seq, cur.head, rec)
        if how in ("old", "gap"):
            raise BackupError(f"{where}: expected seq {cur.seq + 1} (seqs must be dense from 1, in order)")
        if how == "break":
            raise BackupError(f"{where}: prev does not link to the previous record's hash (broken chain)")
        cur.seq, cur.head = rec.seq, rec.hash
        cur.digests.append(_digest(wire))
    for plan in plans.values():
        if plan.base is not None and plan.seq == plan.base_seq:
            raise BackupError(f"{plan.feed}: a base without the records after it (a compacted feed keeps its head)")
    if trailer is None:
        raise BackupError("no trailer line: the file is truncated")
    heads = trailer.get("heads")
    if trailer.get("end") is not True or not isinstance(heads, dict):
        raise BackupError("malformed trailer")
    missing = [f for f in listed if f not in plans]
    if missing:
        raise BackupError(f"{missing[0]}: listed in the header but has no records")
    if set(heads) != set(plans):
        raise BackupError(f"trailer heads name feeds {sorted(heads)}, the file has {sorted(plans)}")
    for feed, plan in plans.items():
        h = heads[feed]
        if not isinstance(h, dict) or h.get("seq") != plan.seq or h.get("hash") != plan.head:
            raise BackupError(f"{feed} seq {plan.seq}: head {plan.seq}/{plan.head} does not match the trailer {h!r} "
                              "(records missing or altered)")
    total = sum(p.seq - p.base_seq for p in plans.values())
    if trailer.get("count") != total:
        raise BackupError(f"trailer count {trailer.get('count')!r} != {total} records in the file")
    for plan in plans.values():
        await _check_target(storage, plan)
    return header, plans


async def _check_target(storage: Storage, plan: FeedPlan) -> None:
    head = await storage.head(plan.feed)
    if head is None or head.seq == 0:
        return
    if head.seq > plan.seq:
        raise BackupError(f"{plan.feed}: the target already has {head.seq} records, the file only {plan.seq}")
    tbase = await storage.load_base(plan.feed)
    if (tbase.snap.to_wire() if tbase else None) != (plan.base.snap.to_wire() if plan.base else None):
        raise BackupError(f"{plan.feed}: the target's compaction base differs from the file's "
                          "(refusing to overwrite or fork the feed)")
    since = plan.base_seq
    while since < head.seq:
        rows = await storage.read(plan.feed, since, min(READ_PAGE, head.seq - since))
        if not rows:
            break
        for row in rows:
            if _digest(json.loads(row.data)) != plan.digests[row.seq - 1 - plan.base_seq]:
                raise BackupError(f"{plan.feed} seq {row.seq}: the target already has a different record "
                                  "(refusing to overwrite or fork the feed)")
            since = row.seq
    plan.existing = head.seq


async def verify_and_import(storage: Storage, fp: IO[str]) -> ImportResult:
    """Verify everything in ``fp`` (seekable), then append the records the target lacks."""
    fp.seek(0)
    _, plans = await verify_export(storage, fp)
    fp.seek(0)
    written: dict[str, int] = dict.fromkeys(plans, 0)
    batch: list[tuple[Record, str]] = []
    batch_feed: str | None = None
    expected = 0

    async def flush() -> None:
        nonlocal batch, expected
        if batch and batch_feed is not None:
            await storage.append(batch_feed, expected, batch)
            expected += len(batch)
            written[batch_feed] += len(batch)
        batch = []

    it = iter(_lines(fp))
    next(it)  # header
    for n, line in it:
        obj = json.loads(line)
        if "end" in obj:
            break
        feed = obj["feed"]
        plan = plans[feed]
        if "base" in obj:
            if plan.existing == 0 and plan.base is not None:
                await flush()
                await storage.save_base(plan.base)  # verified above; starts the empty feed at its seq
            continue
        seq = obj["rec"]["seq"]
        if _digest(obj["rec"]) != plan.digests[seq - 1 - plan.base_seq]:
            raise BackupError(f"{feed} seq {seq} (line {n}): the file changed while it was being imported")
        if seq <= plan.existing:
            continue
        if feed != batch_feed:
            await flush()
            batch_feed, expected = feed, max(plan.existing, plan.base_seq)
        rec = Record.from_wire(obj["rec"], verify_sigs=False)  # verified above; digest unchanged
        batch.append((rec, frames.encode(rec.to_wire())))
        if len(batch) >= WRITE_BATCH:
            await flush()
    await flush()
    return ImportResult(written, {f: p.existing - p.base_seq if p.existing else 0 for f, p in plans.items()})
