"""collab/namespaces/relaylog.py: ``relay/`` feeds, written by their sequencing relay only."""
from __future__ import annotations

import pytest

from collab.access import Access
from collab.errors import Unauthorized
from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from collab.namespaces.base import Admission
from collab.namespaces.relaylog import RelayLogNamespace

RELAY = Keypair.from_seed(b"R" * 32)
OTHER = Keypair.from_seed(b"O" * 32)
ADM = Admission(1, RELAY.public_hex)


def test_only_the_sequencing_relay_may_write() -> None:
    ns = RelayLogNamespace()
    state = ns.initial("relay/alarms")
    ns.validate(state, Event.create(RELAY, "relay/alarms", "alarm", {"what": "fork"}), ADM)
    with pytest.raises(Unauthorized):
        ns.validate(state, Event.create(OTHER, "relay/alarms", "alarm", {"what": "false alarm"}), ADM)
    with pytest.raises(Unauthorized):  # another relay's key is not this relay's either
        ns.validate(state, Event.create(RELAY, "relay/alarms", "alarm", {}), Admission(1, OTHER.public_hex))


def test_access_is_fixed_and_the_state_counts_the_relays_records() -> None:
    ns = RelayLogNamespace()
    assert ns.initial_access("relay/alarms") == Access(policy="signed")
    state, prev = ns.initial("relay/alarms"), GENESIS
    for seq, author in enumerate([RELAY, RELAY, OTHER], start=1):  # a mirror may hold a stray one
        rec = Record.seal(RELAY, Event.create(author, "relay/alarms", "alarm", {"n": seq}), seq, prev)
        state, prev = ns.apply(state, rec), rec.hash
    assert state == 2 and ns.view(state) == {"records": 2}
    assert ns.load("relay/alarms", ns.dump(state)) == 2
