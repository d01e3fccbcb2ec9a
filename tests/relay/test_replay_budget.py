"""A duplicate or replayed event never spends its author's budget (issue 13, item 4; docs/protocol.md
11.1 and 14).

An attacker who replays a victim's stored events (fetched over HTTP, validly signed) is answered
``dup`` and charged on its own connection (and IP), never on the victim's per-key bucket; the
victim's own re-sends of stored events cost it nothing either. Before, the replays drained the
victim's bucket and its own next publishes were refused ``rate_limited``.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from collab.client import Client
from collab.keys import Keypair
from collab.replay import fetch_records
from relay.core.limits import Limits
from tests.rawclient import Raw

FAST = {"backoff_base": 0.02, "backoff_max": 0.3}
BURST = 20  # the victim's per-key bucket; it refills at 0.5 event/s (no refill to speak of here)
FEED = "notes/victim"


async def pipeline(raw: Raw, events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """Send every event in one WebSocket message; the answers, in order."""
    start = len(raw.frames)
    await raw.send("\n".join(json.dumps({"t": "pub", "rid": f"{tag}{i}", "event": ev}) for i, ev in enumerate(events)))
    return [await raw.wait(lambda f, r=f"{tag}{i}": f.get("rid") == r, start=start) for i in range(len(events))]


async def test_replaying_a_victims_events_does_not_spend_its_budget(start_relay: Callable[..., Any]) -> None:
    limits = Limits(events_per_sec_key=0.5, burst_key=BURST, events_per_sec_ip=1000.0, burst_ip=10_000)
    relay = await start_relay("r", limits=limits)
    victim, attacker = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, victim, **FAST) as me:
        for i in range(BURST // 2):  # half of the victim's burst
            await me.publish(FEED, "note", {"n": i})
        stored = [r["event"] for r in await fetch_records(relay.url, FEED)]
        assert len(stored) == BURST // 2

        for key in (attacker, None):  # authenticated as itself, then anonymous
            raw = await Raw.connect(relay.ws_url, key)
            try:
                answers = await pipeline(raw, stored * 5, "x")  # 50 replays
            finally:
                await raw.close()
            oks = [a for a in answers if a["t"] == "ok"]
            assert all(a["dup"] for a in oks) and len(oks) == BURST  # the attacker's own connection budget
            assert {a["code"] for a in answers if a["t"] == "error"} == {"rate_limited"}

        # the victim re-sends its stored events (an outbox after a reconnect): free as well
        raw = await Raw.connect(relay.ws_url, victim)
        try:
            assert all(a["t"] == "ok" and a["dup"] for a in await pipeline(raw, stored, "v"))
        finally:
            await raw.close()

        # the victim's budget is whole: the other half of its burst goes through
        for i in range(BURST // 2, BURST):
            ack = await me.publish(FEED, "note", {"n": i})
            assert not ack.dup
