"""relay/core/vetting.py: a doc feed's checks in a real Yjs sandbox; what a refusal and a
quarantine count, say and raise."""
from __future__ import annotations

from collab.events import GENESIS, Event, Record, b64
from collab.keys import Keypair
from collab.namespaces.doc import DocState
from collab.sandbox import PANIC
from collab.sandbox_supervisor import Sandbox

from relay.core.metrics import Metrics
from relay.core.vetting import Vetting
from tests.collab.yjs_inputs import crashers, edits

RELAY = Keypair.from_seed(b"R" * 32)
ALICE = Keypair.from_seed(b"A" * 32)


def rec(update: bytes, seq: int, kind: str = "doc.update") -> Record:
    body = {"update": b64(update)} if kind == "doc.update" else {"n": seq}
    return Record.seal(RELAY, Event.create(ALICE, "doc/v", kind, body, ts=seq), seq, GENESIS, seq)


async def test_check_refuses_only_the_updates_the_engine_fails_on() -> None:
    poison = next(c for c in crashers(("panic",)) if not c.prefix)
    a, b = edits("one ", "two")
    metrics, alarms = Metrics(), []
    async with Sandbox() as sb:
        vet = Vetting("doc/v", sb, metrics, alarms.append)
        recs = [rec(a, 1), rec(b"", 2, kind="note"), rec(poison.update, 3), rec(b, 4)]
        bad = await vet.check(DocState(), recs, full=False)
    assert list(bad) == [2] and bad[2].code == PANIC  # the index in recs; the note is not a doc update
    err = vet.refused(recs[2].event, bad[2])
    assert err.code == "invalid" and recs[2].event.id in str(err)
    assert metrics.yjs_refused.get("panic") == 1
    vet.quarantined(recs[2], bad[2])
    assert metrics.yjs_refused.get("quarantined") == 1
    [alarm] = alarms
    assert alarm["seq"] == 3 and alarm["event_id"] == recs[2].event.id and alarm["verdict"] == "panic"


async def test_no_doc_updates_no_round_trip() -> None:
    async with Sandbox() as sb:
        vet = Vetting("doc/v", sb, Metrics())
        assert await vet.check(DocState(), [rec(b"", 1, kind="note")]) == {}
        assert all(c.proc is None for c in sb._children)  # the child was never started
