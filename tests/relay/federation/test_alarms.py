"""relay/federation/alarms.py: an alarm is logged, counted, and published once as a relay-signed
event in ``relay/alarms`` (a real relay; the evidence is read back over HTTP and verified)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from relay.federation.alarms import ALARM_FEED, Alarms, compact
from relay.ops.runner import Running, serving
from tests.conftest import make_config

pytestmark = pytest.mark.timeout(60)

PEER = Keypair.from_seed(b"p" * 32)


def record(seq: int, body: Any) -> dict[str, Any]:
    ev = Event.create(Keypair.from_seed(b"a" * 32), "doc/x", "note", body)
    return Record.seal(PEER, ev, seq, GENESIS).to_wire()


async def alarm_records(running: Running) -> list[Record]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{running.url}/feeds/{ALARM_FEED}/events", params={"since": 0})
    if r.status_code == 404:
        return []
    return [Record.from_wire(d) for d in r.json()["records"]]


def test_compact_keeps_the_receipt_and_drops_the_body() -> None:
    rec = record(3, {"big": "x" * 100})
    out = compact(rec)
    assert out is not None and "event" not in out
    assert out["event_id"] == rec["event"]["id"] and out["feed"] == "doc/x" and out["rsig"] == rec["rsig"]
    assert compact(None) is None


async def test_an_alarm_is_logged_counted_and_published_once(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    async with serving(make_config(tmp_path)) as running:
        alarms = Alarms(running.relay.hub)
        ours, theirs = record(5, {"v": 1}), record(5, {"v": 2})
        with caplog.at_level(logging.ERROR, logger="relay.federation.alarms"):
            await alarms.raise_("equivocation", "doc/x", 5, ours, theirs, PEER.public_hex, "two records for seq 5")
            await alarms.raise_("equivocation", "doc/x", 5, ours, theirs, PEER.public_hex, "two records for seq 5")
        assert alarms.count == 2  # counted every time ...
        assert sum("ALARM equivocation" in r.getMessage() for r in caplog.records) == 2
        recs = await alarm_records(running)
        assert len(recs) == 1  # ... published once
        ev = recs[0].event
        assert ev.kind == "alarm.equivocation" and ev.author == running.relay.hub.relay_key.public_hex
        assert ev.body == {"feed": "doc/x", "seq": 5, "ours": ours, "theirs": theirs, "peer": PEER.public_hex,
                           "reason": "two records for seq 5"}
        await alarms.raise_("gap", "doc/x", 9, None, theirs, PEER.public_hex, "skips 6..8")
        assert [r.event.kind for r in await alarm_records(running)] == ["alarm.equivocation", "alarm.gap"]


async def test_too_large_evidence_keeps_the_receipts_and_malformed_evidence_is_kept_as_text(tmp_path: Path) -> None:
    from relay.core.limits import Limits

    async with serving(make_config(tmp_path, limits=Limits(max_event_bytes=4096))) as running:
        alarms = Alarms(running.relay.hub)
        big = record(2, {"blob": "y" * 8000})
        await alarms.raise_("invalid", "doc/x", 2, None, big, PEER.public_hex, "bad receipt")
        await alarms.raise_("invalid", "doc/x", 3, None, {"seq": 1.5}, PEER.public_hex, "not a record")
        first, second = (r.event.body for r in await alarm_records(running))
        assert first["theirs"] == compact(big)
        assert second["theirs"] == repr({"seq": 1.5})


async def test_alarms_are_deduplicated_per_feed_and_seq_and_rate_limited(tmp_path: Path) -> None:
    from relay.core.limits import Limits

    async with serving(make_config(tmp_path, limits=Limits(alarms_burst=5, alarms_per_sec=1e-6))) as running:
        alarms = Alarms(running.relay.hub)
        ours = record(1, {"v": 1})
        for n in range(3):  # other evidence for the same (feed, seq): published once
            await alarms.raise_("equivocation", "doc/x", 1, ours, record(1, {"v": n + 2}), PEER.public_hex, "fork")
        for seq in range(2, 52):  # 50 more (feed, seq) pairs: only the burst is written
            await alarms.raise_("gap", "doc/x", seq, None, record(seq, {}), PEER.public_hex, "gap")
        assert alarms.count == 53
        written = await alarm_records(running)
        assert [r.event.body["seq"] for r in written] == [1, 2, 3, 4, 5]
        assert alarms.suppressed == 46
