"""Local replay and audit of a feed's log, independent of any relay.

:func:`replay` folds records through the same functions the relay uses
(:class:`collab.feedcore.FeedCore`, the fold the relay's feed worker uses), so an agent or auditor can rebuild
the state at any seq and check the relay's work. Instead of stopping at the first problem it reports every
:class:`Anomaly` it finds; ``verified`` is true only when there are none.

Records that fail verification (author signature, event id, relay receipt) are never folded:
the hole they leave is reported as a ``gap`` as well. Of two records claiming one seq
(``fork``) the one linking to the previous record is folded, preferring the one the next
record links to (otherwise the first given).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .access import Access
from .errors import BadSignature, ColonyError, InvalidEvent, RelayError
from .events import GENESIS, Record, Snapshot, namespace_of, now_ms, receipt_bytes, unb64
from .feedcore import FeedCore, admit
from .httpauth import authorization
from .keys import Keypair, verify
from .namespaces import Namespace, Registry, default_registry
from .namespaces.base import Admission
from .sandbox import VERDICTS
from .sandbox_supervisor import Sandbox

_VET_GEN = itertools.count(1 << 40)  # tags of documents replay vets (no DocState here has them)

ANOMALY_KINDS = (
    "bad_signature",    # event signature or id does not verify (content was altered)
    "bad_receipt",      # the relay's receipt signature does not verify (seq/prev/rtime altered)
    "invalid",          # not a well-formed record, or the relay should have refused the event
    "unauthorized",     # the event's author had no right to write it at that point
    "chain_break",      # prev is not the hash of the previous record
    "gap",              # one or more seqs are missing
    "fork",             # two different records claim the same seq
    "duplicate_event",  # one event id sequenced twice
    "causal_ahead",     # event.ctx >= its own seq: it claims to have seen the future
    "unordered",        # records were not given in ascending seq order
    "foreign_feed",     # a record of another feed was mixed in (skipped)
    "quarantined",      # the Yjs engine fails on this doc update (collab.sandbox): left out of the fold
)


@dataclass(frozen=True, slots=True)
class Anomaly:
    seq: int
    kind: str
    detail: str


@dataclass(slots=True)
class ReplayResult:
    feed: str | None
    state: Any
    access: Access
    seq: int
    head: str
    verified: bool
    anomalies: list[Anomaly] = field(default_factory=list)
    namespace: Namespace[Any] | None = None

    @property
    def problems(self) -> list[Anomaly]:
        return self.anomalies

    def kinds(self) -> set[str]:
        return {a.kind for a in self.anomalies}

    def view(self) -> Any:
        """The namespace's JSON view of the state (e.g. ``{"text": ...}`` for docs)."""
        return self.namespace.view(self.state) if self.namespace is not None else None


def receipt_ok(rec: Record) -> bool:
    rb = receipt_bytes(rec.feed, rec.seq, rec.prev, rec.event.id, rec.rtime, rec.relay)
    return verify(bytes.fromhex(rec.relay), rb, bytes.fromhex(rec.rsig))


def parse_records(raw: Iterable[Any]) -> tuple[list[Record], list[Anomaly]]:
    """Turn wire dicts (or Records) into verified Records; failures become anomalies."""
    out: list[Record] = []
    anomalies: list[Anomaly] = []
    for item in raw:
        seq = item.seq if isinstance(item, Record) else _seq_of(item)
        if isinstance(item, Record):
            rec = item
        else:
            try:
                rec = Record.from_wire(item, verify_sigs=False)
            except BadSignature as exc:
                anomalies.append(Anomaly(seq, "bad_signature", str(exc)))
                continue
            except InvalidEvent as exc:
                anomalies.append(Anomaly(seq, "invalid", str(exc)))
                continue
        if not rec.event.verify():
            anomalies.append(Anomaly(seq, "bad_signature", "event id or author signature does not verify"))
        elif not receipt_ok(rec):
            anomalies.append(Anomaly(seq, "bad_receipt", "relay receipt signature does not verify"))
        else:
            out.append(rec)
    return out, anomalies


def _seq_of(item: Any) -> int:
    seq = item.get("seq") if isinstance(item, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def replay(records: Iterable[Record | dict[str, Any]], registry: Registry | None = None, at: int | None = None,
           *, feed: str | None = None, base: Snapshot | dict[str, Any] | None = None,
           quarantine: Mapping[int, str] | None = None) -> ReplayResult:
    """Fold ``records`` (any order; dicts are verified first) up to seq ``at`` (default: all).

    Structural checks (chain, gaps, forks, duplicates, causality) cover every record given;
    authorization and namespace validity are checked for the records folded (up to ``at``).

    ``base`` is a compacted feed's base snapshot (docs/protocol.md, section 15): its relay
    signature is verified (``bad_signature`` otherwise), the fold starts from its state, and the
    first record must link to its ``head``. Records at or below its seq are ignored. The access
    state before the base is not part of it, so authorization is not checked after a base.

    ``quarantine`` (seq -> reason, from :func:`vet_log`): doc updates the Yjs engine fails on;
    they are reported (``quarantined``) and left out of the fold, as the relay does.
    """
    items = list(records)
    recs, anomalies = parse_records(items)
    snap: Snapshot | None = None
    base_seq = 0
    if base is not None:
        base_seq = _seq_of(base) if isinstance(base, dict) else base.seq
        try:
            snap = Snapshot.from_wire(base) if isinstance(base, dict) else base
            if not snap.verify():
                raise BadSignature("snapshot signature does not verify")
        except (BadSignature, InvalidEvent) as exc:
            kind = "bad_signature" if isinstance(exc, BadSignature) else "invalid"
            anomalies.append(Anomaly(base_seq, kind, f"base snapshot: {exc}"))
            snap = None
        else:
            base_seq = snap.seq
        feed = feed or (snap.feed if snap is not None else None)
    feed = feed or (recs[0].feed if recs else None)
    registry = registry or default_registry()
    if feed is None:
        return ReplayResult(None, None, Access(), 0, GENESIS, not anomalies, anomalies)
    ns = registry.for_feed(feed)
    core = FeedCore(feed, ns, id_cache=0)  # the fold; the chain analysis below is the auditor's own
    if snap is not None and snap.feed != feed:
        anomalies.append(Anomaly(snap.seq, "foreign_feed", f"base snapshot of {snap.feed} in a replay of {feed}"))
        snap = None
    if snap is not None:
        core.restore(snap.seq, snap.head, snap.state)
    recs = [r for r in recs if r.seq > base_seq]

    by_seq: dict[int, list[Record]] = {}
    last = 0
    unordered = False
    for rec in recs:
        if rec.feed != feed:
            anomalies.append(Anomaly(rec.seq, "foreign_feed", f"record of {rec.feed} in a replay of {feed}"))
            continue
        if rec.seq < last and not unordered:
            unordered = True
            anomalies.append(Anomaly(rec.seq, "unordered", f"seq {rec.seq} came after seq {last}"))
        last = max(last, rec.seq)
        group = by_seq.setdefault(rec.seq, [])
        if all(r.hash != rec.hash for r in group):  # identical copies are harmless
            group.append(rec)

    seq, head, head_known = 0, GENESIS, True
    at_seq, at_head = 0, GENESIS
    if base is not None:  # the chain continues from the base (unknown if it did not verify)
        seq, head, head_known = base_seq, (snap.head if snap is not None else GENESIS), snap is not None
        at_seq, at_head = seq, head
    ids: dict[str, int] = {}
    for s in sorted(by_seq):
        cands = by_seq[s]
        if s != seq + 1:
            anomalies.append(Anomaly(seq + 1, "gap", f"seq {seq + 1}..{s - 1} missing"))
            head_known = False
        if len(cands) > 1:
            anomalies.append(Anomaly(s, "fork", f"{len(cands)} different records claim seq {s}"))
        linked = [c for c in cands if c.prev == head] if head_known else cands
        if not linked:
            anomalies.append(Anomaly(s, "chain_break", f"prev of seq {s} is not the hash of seq {seq}"))
            linked = cands
        nexts = {n.prev for n in by_seq.get(s + 1, ())}
        rec = next((c for c in linked if c.hash in nexts), linked[0])  # a fork: follow the longer chain
        ev = rec.event
        if ev.id in ids:
            anomalies.append(Anomaly(s, "duplicate_event", f"event {ev.id[:16]} already sequenced at {ids[ev.id]}"))
        if ev.ctx >= s:
            anomalies.append(Anomaly(s, "causal_ahead", f"ctx {ev.ctx} is not below its own seq {s}"))
        if (at is None or s <= at) and quarantine and s in quarantine:
            anomalies.append(Anomaly(s, "quarantined", quarantine[s]))
            core.skip(rec)
            at_seq, at_head = s, rec.hash
        elif at is None or s <= at:
            problem = _admissible(core, rec, check_access=base is None)
            if problem is not None:
                anomalies.append(problem)
            held = len(getattr(core.state, "quarantined", ()))
            core.fold(rec)
            if len(getattr(core.state, "quarantined", ())) > held:  # the engine panicked in the fold
                anomalies.append(Anomaly(s, "quarantined", "the Yjs engine panicked on this update"))
            at_seq, at_head = s, rec.hash
        ids.setdefault(ev.id, s)
        seq, head, head_known = s, rec.hash, True
    return ReplayResult(feed, core.state, core.access, at_seq, at_head, not anomalies, anomalies, ns)


def _admissible(core: FeedCore, rec: Record, check_access: bool = True) -> Anomaly | None:
    """Would the relay have accepted this event here? (the checks of ``FeedCore.seal``)"""
    ev, s = rec.event, rec.seq
    try:
        admit(core.ns, core.state, core.access, ev, ev.author, s, Admission.of(rec), check_access=check_access)
    except ColonyError as exc:
        kind = "unauthorized" if exc.code in ("unauthorized", "auth_required") else "invalid"
        return Anomaly(s, kind, str(exc))
    return None


async def vet_log(sandbox: Sandbox, feed: str, raw: Iterable[Any],
                  base: Snapshot | dict[str, Any] | None = None) -> dict[int, str]:
    """Check a doc feed's updates in the Yjs sandbox, in seq order from ``base``: seq -> why the
    engine fails on it (pass the result to :func:`replay` as ``quarantine``). Other feeds: {}."""
    if namespace_of(feed) != "doc":
        return {}
    recs, _ = parse_records(list(raw))
    state = b""
    base_seq = 0
    if base is not None:
        snap = Snapshot.from_wire(base) if isinstance(base, dict) else base
        state, base_seq = snap.state, snap.seq
    by_seq: dict[int, Record] = {}
    for r in recs:
        if r.feed == feed and r.seq > base_seq and r.event.kind == "doc.update":
            by_seq.setdefault(r.seq, r)
    seqs, updates = [], []
    for seq in sorted(by_seq):
        body = by_seq[seq].event.body
        try:
            updates.append(unb64(body["update"]))
        except (KeyError, TypeError, ValueError):
            continue  # not a doc update body: the fold reports it as invalid
        seqs.append(seq)
    verdicts = await sandbox.check(feed, (next(_VET_GEN), 0), updates, lambda: state, full=True)
    return {seq: f"{VERDICTS.get(v.code, 'bad')}: {v.reason}" for seq, v in zip(seqs, verdicts, strict=True)
            if not v.ok}


async def fetch_records(base_url: str, feed: str, since: int = 0, page: int = 1000,
                        *, client: httpx.AsyncClient | None = None, key: Keypair | None = None) -> list[dict[str, Any]]:
    """All records of ``feed`` after ``since`` as raw dicts, paging the relay's HTTP API.
    (A compacted feed's base is dropped: use :func:`fetch_log` to get it.)"""
    return (await fetch_log(base_url, feed, since, page, client=client, key=key))[1]


async def fetch_log(base_url: str, feed: str, since: int = 0, page: int = 1000,
                    *, client: httpx.AsyncClient | None = None,
                    key: Keypair | None = None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(base, records)``: the base snapshot (wire dict, unverified) if the relay compacted the
    records ``since`` asks for, else None; then every record after it (or after ``since``).
    ``key``: the reads are signed by it (docs/protocol.md 15.1), so a reader of a private
    (``members`` or ``dm/``) feed gets its records."""
    base = base_url.rstrip("/")
    snap: dict[str, Any] | None = None
    out: list[dict[str, Any]] = []
    own = client is None
    http = client or httpx.AsyncClient(timeout=30.0)
    path = f"/feeds/{feed}/events"
    try:
        relay = (await http.get(f"{base}/relay")).json()["key"] if key is not None else ""
        while True:
            headers = {"authorization": authorization(key, relay, "GET", path, now_ms())} if key is not None else {}
            r = await http.get(base + path, params={"since": since, "limit": page}, headers=headers)
            if r.status_code != 200:
                try:
                    body = r.json()
                    raise RelayError(str(body.get("error", r.status_code)), str(body.get("message", "")))
                except ValueError:
                    raise RelayError(str(r.status_code), r.text[:200]) from None
            body = r.json()
            rows = body.get("records", [])
            if snap is None and isinstance(body.get("base"), dict):
                snap = body["base"]
                seq = _seq_of(snap)
                since = max(since, seq)
                rows = [x for x in rows if _seq_of(x) > seq]
            out.extend(rows)
            last = _seq_of(rows[-1]) if rows else since
            if len(body.get("records", [])) < page or last <= since:
                return snap, out
            since = last
    finally:
        if own:
            await http.aclose()


async def replay_feed(base_url: str, feed: str, registry: Registry | None = None, at: int | None = None,
                      sandbox: Sandbox | None = None, key: Keypair | None = None) -> ReplayResult:
    """Fetch a feed over HTTP and replay it locally (doc updates vetted in ``sandbox`` first,
    when given: then the engine never runs in this process on an update it fails on). ``key``:
    read as that key (a private feed's reader; see :func:`fetch_log`)."""
    snap, records = await fetch_log(base_url, feed, key=key)
    quarantine = await vet_log(sandbox, feed, records, snap) if sandbox is not None else None
    return replay(records, registry, at, feed=feed, base=snap, quarantine=quarantine)


__all__ = ["ANOMALY_KINDS", "Anomaly", "ReplayResult", "fetch_log", "fetch_records", "parse_records", "receipt_ok",
           "replay", "replay_feed", "vet_log"]
