"""collab/namespaces/generic.py: the fallback namespace (any kind, any body; state counts records)."""
from __future__ import annotations

from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from collab.namespaces.base import Admission
from collab.namespaces.generic import GenericNamespace

RELAY = Keypair.from_seed(b"R" * 32)
AUTHOR = Keypair.from_seed(b"A" * 32)


def test_any_event_is_accepted_and_counted() -> None:
    ns = GenericNamespace()
    state, prev = ns.initial("misc/g"), GENESIS
    assert state == 0 and ns.kinds == frozenset()
    for seq, (kind, body) in enumerate([("note", {"a": 1}), ("x.y", [1, "two"]), ("z", None)], start=1):
        ev = Event.create(AUTHOR, "misc/g", kind, body)
        ns.validate(state, ev, Admission(0, RELAY.public_hex))
        rec = Record.seal(RELAY, ev, seq, prev)
        state, prev = ns.apply(state, rec), rec.hash
    assert state == 3


def test_its_snapshot_round_trips() -> None:
    ns = GenericNamespace()
    assert ns.dump(42) == b"42"
    assert ns.load("misc/g", ns.dump(42)) == 42
