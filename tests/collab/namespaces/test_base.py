"""collab/namespaces/base.py: the plug-in interface, Admission, and the registry."""
from __future__ import annotations

import pytest

from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from collab.namespaces import default_registry
from collab.namespaces.base import Admission, Namespace, Registry
from collab.namespaces.generic import GenericNamespace

RELAY = Keypair.from_seed(b"R" * 32)
AUTHOR = Keypair.from_seed(b"A" * 32)


class Tally(Namespace[tuple[str, ...]]):
    """A minimal real plug-in: the kinds seen so far (no snapshot, no view)."""

    name = "tally"
    kinds = frozenset(("tick",))

    def initial(self, feed: str) -> tuple[str, ...]:
        return ()

    def validate(self, state: tuple[str, ...], event: Event, adm: Admission) -> None:
        return None

    def apply(self, state: tuple[str, ...], record: Record) -> tuple[str, ...]:
        return (*state, record.event.kind)


def test_admission_of_a_record_is_its_receipt_time_and_relay() -> None:
    rec = Record.seal(RELAY, Event.create(AUTHOR, "tally/x", "tick", {}, ts=1), 1, GENESIS, rtime=12345)
    assert Admission.of(rec) == Admission(12345, RELAY.public_hex)


def test_the_defaults_of_a_plug_in() -> None:
    ns = Tally()
    assert ns.default_policy == "signed" and ns.immutable_state
    assert ns.initial_access("tally/x") is None
    assert ns.dump(("tick",)) is None and ns.view(()) is None
    with pytest.raises(NotImplementedError):
        ns.load("tally/x", b"")
    rec = Record.seal(RELAY, Event.create(AUTHOR, "tally/x", "tick", {}), 1, GENESIS)
    assert ns.apply(ns.initial("tally/x"), rec) == ("tick",)


def test_the_registry_maps_a_feeds_namespace_and_falls_back() -> None:
    fallback = GenericNamespace()
    reg = Registry(fallback)
    tally = Tally()
    reg.register(tally)
    assert reg.for_feed("tally/a/b") is tally
    assert reg.for_feed("other/a") is fallback
    assert reg.for_feed("tallyho/a") is fallback  # the namespace is the first segment, exactly
    assert reg.names() == ["tally"]


def test_the_default_registry_knows_every_built_in_namespace() -> None:
    reg = default_registry()
    assert reg.names() == sorted(["agent", "auction", "dm", "doc", "lease", "ledger", "relay", "task", "vouch"])
    for name in reg.names():
        assert reg.for_feed(f"{name}/x").name == name
    assert reg.for_feed("misc/x").name == "*"
