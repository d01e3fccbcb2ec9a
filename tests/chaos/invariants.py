"""What must hold after a chaos run, once every fault is healed and the timers are quiet.

* every acknowledged event is stored at the seq its ``ok`` named (read back over HTTP);
* every feed's log verifies (signatures, receipts, chain, namespace rules: collab's replay),
  on the site and on the federated relay's mirrors, record for record the same;
* every watcher got every seq of every feed it follows exactly once, in order: the ``rec``
  frames of all its connections, concatenated, are 1..H with the stored event ids;
* the ledger conserves its supply: available + locked over every key = the sum of the grants;
* every process and the federated relay list the same heads (``GET /feeds``) and the same
  trust scores (``GET /trust/global``).

:func:`check` returns the list of violations (empty: the run lost nothing) and the figures.
"""
from __future__ import annotations

import asyncio
from typing import Any

import httpx

from collab.events import Record
from collab.replay import fetch_records, replay
from collab.trust import fetch_scores
from tests.chaos.workload import Workload


async def _heads(http: httpx.AsyncClient, url: str) -> dict[str, tuple[int, str]]:
    r = await http.get(f"{url}/feeds", params={"limit": 10000})
    r.raise_for_status()
    return {e["feed"]: (e["seq"], e["head"]) for e in r.json()["feeds"]}


async def converged(w: Workload, http: httpx.AsyncClient) -> list[str]:
    """What still differs (empty once every relay lists the same heads and every watcher holds them)."""
    nodes = w.cluster.nodes
    try:
        heads = [await _heads(http, n.url) for n in nodes]
    except (httpx.HTTPError, ValueError) as exc:
        return [f"GET /feeds failed: {exc!r}"]
    site, fed = heads[:-1], heads[-1]
    out = [f"{n.name} lists other heads than site0: "
           f"{sorted((f, h.get(f), site[0].get(f)) for f in set(h) | set(site[0]) if h.get(f) != site[0].get(f))[:3]}"
           for n, h in zip(nodes[1:-1], site[1:], strict=True) if h != site[0]]
    public = sorted(f for f in w.feeds if not f.startswith("dm/"))
    mirrors = [f"the federated relay has {f} at {fed.get(f)}, the site at {site[0][f]}"
               for f in public if f in site[0] and fed.get(f) != site[0][f]]
    for f in public:
        for name, watcher in w.follows.get(f, []):
            sub = watcher.subscription(f)
            want = site[0].get(f, (0, ""))[0]
            if sub is None or sub.seq != want:
                seqs = [q for _, q, _ in watcher.frames.get(f, [])]
                out.append(f"watcher on {name} holds {f} at {sub.seq if sub else None} "
                           f"(ended by {watcher.dropped.get(f)}, got seqs {seqs[-12:]}), the site at {want}")
    return out + mirrors


async def check(w: Workload) -> tuple[list[str], dict[str, int]]:
    bad: list[str] = []
    c = w.cluster
    assert c.fed is not None
    async with httpx.AsyncClient(timeout=30) as http:
        logs: dict[str, list[Record]] = {}
        raws: dict[str, list[dict[str, Any]]] = {}
        for f in sorted(w.feeds):
            key = w.dms.get(f)
            raw = await fetch_records(c.site[0].url, f, client=http, key=key)
            raws[f] = raw
            result = replay(raw, feed=f)
            if not result.verified:
                bad.append(f"{f}: the log does not verify: {result.anomalies[:3]}")
            logs[f] = [Record.from_wire(r) for r in raw]
            if [r.seq for r in logs[f]] != list(range(1, len(raw) + 1)):
                bad.append(f"{f}: the stored seqs are not dense")
            others = [n for n in c.nodes if not (key is not None and n is c.fed)]  # dm/ feeds are not mirrored
            served = [await fetch_records(n.url, f, client=http, key=key) for n in others[1:]]
            bad += [f"{f}: {n.name} serves another log than site0" for n, r in zip(others[1:], served, strict=True)
                    if r != raw]

        acked = 0
        for client in w.clients:
            for eid, seq in client.acks.items():
                acked += 1
                feed = client.submitted[eid].feed
                log = logs.get(feed, [])
                if not (0 < seq <= len(log) and log[seq - 1].event.id == eid):
                    bad.append(f"LOST: event {eid[:16]} acked at {feed}#{seq} is not stored there")

        delivered = 0
        for name, watcher in w.watchers:
            if watcher.snapshots:
                bad.append(f"watcher on {name} got snapshots instead of records: {watcher.snapshots[:5]}")
        for f in sorted(w.feeds):
            for name, watcher in w.follows.get(f, []):
                sub = watcher.subscription(f)
                if sub is None or sub.error is not None:
                    bad.append(f"watcher on {name}: {f} ended with {sub.error if sub else 'no subscription'!r}")
                got = [(seq, eid) for _, seq, eid in watcher.frames.get(f, [])]
                want = [(r.seq, r.event.id) for r in logs[f]]
                delivered += len(got)
                if got != want:
                    bad.append(f"watcher on {name}: {f} delivered {_diff(got, want)}")

        ledger = replay(raws["ledger/main"], feed="ledger/main").view()
        grants = sum(r.event.body["amount"] for r in logs["ledger/main"] if r.event.kind == "ledger.grant")
        held = sum(b["available"] + b["locked"] for b in ledger["balances"].values())
        if held != grants:
            bad.append(f"ledger: available + locked = {held}, grants = {grants}")
        for n in c.nodes:
            state = (await http.get(f"{n.url}/feeds/ledger/main")).json().get("state") or {}
            if state.get("balances") != ledger["balances"]:
                bad.append(f"ledger: {n.name}'s balances differ from the replayed log's")

        scores = await asyncio.gather(*(fetch_scores(n.url) for n in c.nodes))
        for n, s in zip(c.nodes[1:], scores[1:], strict=True):
            if s != scores[0]:
                bad.append(f"trust: {n.name}'s scores differ from site0's")
        if not scores[0]:
            bad.append("trust: no scores at all (no vouch was stored?)")
    figures = {"events acked": acked, "records stored": sum(len(v) for v in logs.values()),
               "feeds": len(logs), "records delivered to watchers": delivered, "ledger supply": grants,
               "events lost": sum(1 for b in bad if b.startswith("LOST"))}
    return bad, figures


def _diff(got: list[tuple[int, str]], want: list[tuple[int, str]]) -> str:
    seqs = [s for s, _ in got]
    dups = sorted({s for s in seqs if seqs.count(s) > 1})
    missing = sorted({s for s, _ in want} - set(seqs))
    wrong = [s for s, e in got if 0 < s <= len(want) and want[s - 1][1] != e]
    return (f"{len(got)} recs for {len(want)} stored: duplicates {dups[:10]}, missing {missing[:10]}, "
            f"other ids at {wrong[:10]}, order {'ok' if seqs == sorted(seqs) else 'broken'}")


def summary(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in figures.items())
