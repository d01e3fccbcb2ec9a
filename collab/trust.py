"""Deterministic EigenTrust over a ``vouch/`` feed (``docs/coordination.md``, "Vouching and trust").

Scores are integers in parts per billion that sum to exactly 1e9. Everything is integer fixed
point with one floor division per step and keys taken in sorted order, so every machine (and
every language that follows the doc) gets bit-identical scores. The input is the *set* of
events kept by :class:`collab.namespaces.vouch.VouchState`; ``seq`` and ``rtime`` are never
read, so the arrival order of events cannot change a score.

The scoring itself (:func:`scores`, :class:`TrustParams`, :func:`decay`) lives beside the state
it reads, in ``collab.namespaces.vouch`` (whose ``view`` shows the scores), and is re-exported
here; this module adds the fold of records (:func:`compute`) and the agent's side (vouch,
revoke, the relay's scores over HTTP).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from .events import Record
from .feedcore import fold_records
from .namespaces.vouch import (
    DAY_MS,
    DEFAULT,
    SCALE,
    TrustParams,
    VouchNamespace,
    VouchState,
    decay,
    scores,
)

__all__ = [
    "DAY_MS",
    "DEFAULT",
    "SCALE",
    "TrustParams",
    "compute",
    "decay",
    "fetch_scores",
    "revoke",
    "scores",
    "trust_of",
    "vouch",
]


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
    async with httpx.AsyncClient(timeout=10.0) as http:
        resp = await http.get(f"{url.rstrip('/')}/trust/{topic}")
        resp.raise_for_status()
        return {row["key"]: row["score"] for row in resp.json()["scores"]}
