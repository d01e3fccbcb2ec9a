"""Direct-message feeds (collab/namespaces/dm.py): fixed access, body rules, metadata-only state."""
from __future__ import annotations

from typing import Any

import pytest

from collab.access import Access
from collab.dm import dm_feed, seal_message
from collab.errors import InvalidEvent, Unauthorized
from collab.events import GENESIS, Event, Record, b64
from collab.keys import Keypair
from collab.namespaces.base import Admission, Registry
from collab.namespaces.dm import MAX_RECENT, DmNamespace, DmState, MsgMeta
from collab.namespaces.generic import GenericNamespace
from collab.replay import replay

RELAY = Keypair.from_seed(b"R" * 32)
K1, K2, K3 = (Keypair.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
A, B = sorted((K1, K2), key=lambda k: k.public_hex)
FEED = dm_feed(A.public_hex, B.public_hex)
NS = DmNamespace()
ADM = Admission(1000, RELAY.public_hex)


def body(**over: Any) -> dict[str, Any]:
    return {"nonce": b64(bytes(24)), "box": b64(bytes(40)), **over}


def fold(events: list[Event]) -> tuple[DmState, list[Record]]:
    state, recs, head = NS.initial(FEED), [], GENESIS
    for i, ev in enumerate(events, 1):
        NS.validate(state, ev, ADM)
        rec = Record.seal(RELAY, ev, i, head, 1000 + i)
        state, head = NS.apply(state, rec), rec.hash
        recs.append(rec)
    return state, recs


def test_feed_name() -> None:
    assert FEED == f"dm/{A.public_hex}.{B.public_hex}" and A.public_hex < B.public_hex
    assert dm_feed(B.public_hex, A.public_hex) == FEED
    for a, b in [(A.public_hex, A.public_hex), (A.public_hex.upper(), B.public_hex), (A.public_hex, "b" * 63)]:
        with pytest.raises(InvalidEvent):
            dm_feed(a, b)


@pytest.mark.parametrize("feed", [
    f"dm/{B.public_hex}.{A.public_hex}",  # not ordered
    f"dm/{A.public_hex}.{A.public_hex}",  # one key twice
    f"dm/{A.public_hex.upper()}.{B.public_hex}",
    f"dm/{A.public_hex}.{B.public_hex[:-2]}",
    f"dm/{A.public_hex}.{B.public_hex}.{K3.public_hex[:8]}",
    f"dm/{A.public_hex}-{B.public_hex}",
    f"dm/{A.public_hex}",
])
def test_feed_name_rules(feed: str) -> None:
    ev = Event.create(A, feed, "dm.msg", body(), ts=1)
    with pytest.raises(InvalidEvent) as info:
        NS.validate(NS.initial(feed), ev, ADM)
    assert info.value.code == "invalid"
    assert NS.initial_access(feed) == Access(policy="members", owner=None, readers=frozenset(), writers=frozenset())


def test_access_is_fixed_by_the_name() -> None:
    both = frozenset({A.public_hex, B.public_hex})
    access = NS.initial_access(FEED)
    assert access == Access(policy="members", owner=None, readers=both, writers=both)
    assert access.can_read(A.public_hex) and access.can_read(B.public_hex) and not access.can_read(K3.public_hex)


def test_non_member_author_refused() -> None:
    ev = Event.create(K3, FEED, "dm.msg", body(), ts=1)
    with pytest.raises(Unauthorized) as info:
        NS.validate(NS.initial(FEED), ev, ADM)
    assert info.value.code == "unauthorized"
    state, _ = fold([Event.create(A, FEED, "dm.msg", body(), ts=1)])
    rec = Record.seal(RELAY, ev, 2, GENESIS, 1100)  # a relay that let it through: folds nothing
    assert NS.apply(state, rec) == state


@pytest.mark.parametrize("bad", [
    {"nonce": b64(bytes(24))},
    {"box": b64(bytes(40))},
    body(nonce=b64(bytes(23))),
    body(nonce=b64(bytes(25))),
    body(nonce="QR=="),  # non-canonical padding bits
    body(nonce=123),
    body(box=""),
    body(box=b64(bytes(15))),
    body(box="not base64!"),
    body(re="ab" * 31),
    body(re=("AB" * 32)),
    body(re=None),
    body(kind="request"),  # the kind lives inside the box, never beside it
    [1, 2],
])
def test_body_rules(bad: Any) -> None:
    ev = Event.create(A, FEED, "dm.msg", bad, ts=1)
    with pytest.raises(InvalidEvent) as info:
        NS.validate(NS.initial(FEED), ev, ADM)
    assert info.value.code == "invalid"


def test_only_dm_msg() -> None:
    with pytest.raises(InvalidEvent):
        NS.validate(NS.initial(FEED), Event.create(A, FEED, "dm.read", body(), ts=1), ADM)


def test_state_is_metadata_only_and_round_trips() -> None:
    req = Event.create(A, FEED, "dm.msg", seal_message(A, B.public_hex, "request", {"q": "secret question"}), ts=1)
    resp = Event.create(B, FEED, "dm.msg", seal_message(B, A.public_hex, "response", "secret answer", re=req.id), ts=2)
    state, recs = fold([req, resp])
    assert state == DmState(2, 2, (MsgMeta(1, A.public_hex, req.id), MsgMeta(2, B.public_hex, resp.id, req.id)))
    view = NS.view(state)
    assert view == {"count": 2, "last_seq": 2, "messages": [
        {"seq": 1, "author": A.public_hex, "re": None, "id": req.id},
        {"seq": 2, "author": B.public_hex, "re": req.id, "id": resp.id},
    ]}
    dumped = NS.dump(state)
    assert b"secret" not in dumped and NS.load(FEED, dumped) == state
    reg = Registry(GenericNamespace())
    reg.register(NS)
    result = replay(recs, registry=reg)
    assert result.verified and result.state == state


def test_recent_metadata_is_bounded() -> None:
    events = [Event.create(A if i % 2 else B, FEED, "dm.msg", body(), ts=i) for i in range(MAX_RECENT + 5)]
    state, _ = fold(events)
    assert state.count == MAX_RECENT + 5 and state.last_seq == MAX_RECENT + 5
    assert len(state.recent) == MAX_RECENT and state.recent[0].seq == 6
