"""Deterministic EigenTrust over a ``vouch/`` feed (``docs/coordination.md``, "Vouching and trust").

Scores are integers in parts per billion that sum to exactly 1e9. Everything is integer fixed
point with one floor division per step and keys taken in sorted order, so every machine (and
every language that follows the doc) gets bit-identical scores. The input is the *set* of
events kept by :class:`collab.namespaces.vouch.VouchState`; ``seq`` and ``rtime`` are never
read, so the arrival order of events cannot change a score.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .events import Record
from .feedcore import fold_records
from .namespaces.vouch import SET, VouchNamespace, VouchState

SCALE = 1_000_000_000
DAY_MS = 86_400_000
#: past this many half-lives ``SCALE >> k`` is 0: any older edge weighs nothing
_MAX_HALVINGS = SCALE.bit_length()


@dataclass(frozen=True, slots=True)
class TrustParams:
    """EigenTrust parameters: who is trusted a priori, how fast vouches fade, how much to teleport.

    ``alpha_ppb`` is the weight of the pre-trusted distribution in each step (0.15 by default),
    which keeps a clique of keys vouching for each other from soaking up all the trust.
    """

    pretrusted: frozenset[str] = frozenset()
    half_life_ms: int = 30 * DAY_MS
    alpha_ppb: int = 150_000_000
    iterations: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "pretrusted", frozenset(self.pretrusted))
        if not isinstance(self.half_life_ms, int) or self.half_life_ms <= 0:
            raise ValueError("half_life_ms must be a positive integer")
        if not isinstance(self.alpha_ppb, int) or not 0 <= self.alpha_ppb <= SCALE:
            raise ValueError(f"alpha_ppb must be an integer in 0..{SCALE}")
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError("iterations must be a non-negative integer")


DEFAULT = TrustParams()


def decay(age_ms: int, half_life_ms: int) -> int:
    """Weight (ppb) of an event ``age_ms`` old: halves every half-life, linear in between.

    ``(1e9 >> k) * (2*hl - r) // (2*hl)`` with ``k, r = divmod(age, hl)``; a negative age (an
    event newer than the ``at`` asked for) counts as fresh.
    """
    age = max(0, age_ms)
    k, r = divmod(age, half_life_ms)
    if k >= _MAX_HALVINGS:
        return 0
    return (SCALE >> k) * (2 * half_life_ms - r) // (2 * half_life_ms)


def _uniform(keys: list[str]) -> dict[str, int]:
    """``1e9`` split evenly over sorted ``keys``; the remainder goes to the smallest key."""
    share, rest = divmod(SCALE, len(keys))
    out = dict.fromkeys(keys, share)
    out[keys[0]] += rest
    return out


def scores(state: VouchState, params: TrustParams | None = None, relay: str | None = None,
           at: int | None = None) -> dict[str, int]:
    """Every key's trust in ppb (sorted by key), summing to 1e9; ``{}`` for an empty state.

    ``relay`` joins configured pre-trusted keys (as does every key that signed an outcome); ``at``
    (ms) defaults to the greatest ``ts`` in the state, so the result never depends on a clock.
    """
    p = params or DEFAULT
    hl = p.half_life_ms
    now = state.max_ts if at is None else at
    keys: set[str] = set()
    edges: dict[str, dict[str, int]] = {}  # s(i->j) > 0, sparse
    for author, row in state.vouches.items():
        keys.add(author)
        for subject, ev in row.items():
            keys.add(subject)
            if ev.kind == SET and ev.body["weight"] > 0:
                s = ev.body["weight"] * decay(now - ev.ts, hl)
                if s > 0:
                    edges.setdefault(author, {})[subject] = s
    relays: set[str] = set()
    slashed: dict[str, int] = {}  # S_j
    for subject, by_id in state.outcomes.items():
        keys.add(subject)
        for ev in by_id.values():
            keys.add(ev.author)
            relays.add(ev.author)
            d = decay(now - ev.ts, hl)
            if ev.body["outcome"] == "delivered":
                if d > 0:
                    row = edges.setdefault(ev.author, {})
                    row[subject] = row.get(subject, 0) + 1000 * d
            else:
                slashed[subject] = slashed.get(subject, 0) + d
    if not keys:
        return {}
    order = sorted(keys)

    # Configured pre-trusted keys anchor the computation and the relay (every outcome signer)
    # joins them; with none configured every key is a start point. The relay alone must not be
    # the anchor: until it records a delivery it has no edges, and all trust would pool there.
    trusted = p.pretrusted & keys
    if trusted:
        trusted |= (relays | ({relay} if relay else set())) & keys
    pre = _uniform(sorted(trusted) if trusted else order)
    pre_items = sorted(pre.items())

    # C: row-normalised, c(i->j) = s(i->j) * 1e9 // sum_j s(i->j); rows absent = "trusts p"
    rows: dict[str, list[tuple[str, int]]] = {}
    for i in order:
        row = edges.get(i)
        if row:
            total = sum(row.values())
            rows[i] = [(j, s * SCALE // total) for j, s in sorted(row.items())]

    a = p.alpha_ppb
    keep = SCALE - a
    teleport = {j: a * pj * SCALE for j, pj in pre_items}  # a * p_j at scale 1e27
    t = {k: pre.get(k, 0) for k in order}
    for _ in range(p.iterations):
        u = dict.fromkeys(order, 0)  # (C^T t)_j at scale 1e18
        dangling = 0
        for i in order:
            ti = t[i]
            if not ti:
                continue
            out = rows.get(i)
            if out is None:
                dangling += ti
                continue
            for j, c in out:
                u[j] += c * ti
        if dangling:
            for j, pj in pre_items:
                u[j] += pj * dangling
        t = {j: (keep * u[j] + teleport.get(j, 0)) // (SCALE * SCALE) for j in order}

    for j in sorted(slashed):  # one fresh slash halves a score
        t[j] = t[j] * SCALE // (SCALE + slashed[j])
    total = sum(t.values())
    if total == 0:  # everything slashed to nothing: fall back to the prior
        return {k: pre.get(k, 0) for k in order}
    out = {k: t[k] * SCALE // total for k in order}
    out[order[0]] += SCALE - sum(out.values())
    return out


def compute(records: Iterable[Record], params: TrustParams | None = None, at: int | None = None,
            *, relay: str | None = None) -> dict[str, int]:
    """Fold ``records`` of one ``vouch/`` feed (any order; invalid ones are skipped) and score them."""
    ns = VouchNamespace()
    state: VouchState = fold_records(ns, "vouch/global", (r for r in records if r.event.kind in ns.kinds)).state
    return scores(state, params, relay=relay, at=at)


def trust_of(table: Mapping[str, int], key: str) -> int:
    """``key``'s score in ppb, 0 for a key the feed never mentions."""
    return table.get(key, 0)


# -- SDK: vouching from an agent, reading the relay's scores -----------------------------------
async def vouch(client: Any, subject: str, weight: int, topic: str = "global", note: str | None = None) -> Any:
    """Publish (or replace) this agent's vouch for ``subject``; ``weight`` in -1000..1000."""
    body: dict[str, Any] = {"subject": subject, "weight": weight}
    if note:
        body["note"] = note
    return await client.publish("vouch/" + topic, "vouch.set", body)


async def revoke(client: Any, subject: str, topic: str = "global") -> Any:
    return await client.publish("vouch/" + topic, "vouch.revoke", {"subject": subject})


async def fetch_scores(url: str, topic: str = "global") -> dict[str, int]:
    """The relay's scores (``GET /trust/{topic}``), key -> ppb. Recompute them locally with
    ``compute(records)`` from the feed's records to check the relay's answer."""
    import httpx

    async with httpx.AsyncClient(timeout=10.0) as http:
        resp = await http.get(f"{url.rstrip('/')}/trust/{topic}")
        resp.raise_for_status()
        return {row["key"]: row["score"] for row in resp.json()["scores"]}
