"""Routing (docs/federation.md): every member computes the same home; pins win; replication."""
from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from collab.keys import Keypair
from relay.core.routing import ROUTE_DOMAIN, Member, Routing, parse_pin

KEYS = [Keypair.from_seed(bytes([i]) * 32).public_hex for i in range(1, 4)]
MEMBERS = [Member(k, f"http://127.0.0.1:{8700 + i}") for i, k in enumerate(KEYS)]


def view_of(i: int, **kw: object) -> Routing:
    """Member i's routing (itself first, the others as peers, in a rotated order)."""
    others = tuple(MEMBERS[(i + j) % 3] for j in (2, 1))
    return Routing(MEMBERS[i], others, **kw)  # type: ignore[arg-type]


def test_every_member_computes_the_same_home() -> None:
    views = [view_of(i) for i in range(3)]
    feeds = [f"doc/f{i}" for i in range(300)]
    for feed in feeds:
        homes = {v.home(feed).key for v in views}
        assert len(homes) == 1
        assert sum(v.is_home(feed) for v in views) == 1
    spread = Counter(views[0].home(f).key for f in feeds)
    assert set(spread) == set(KEYS) and min(spread.values()) > 60  # rendezvous spreads feeds out


def test_home_is_the_largest_rendezvous_hash() -> None:
    feed = "doc/spec-example"
    scores = {k: hashlib.sha256(ROUTE_DOMAIN + bytes.fromhex(k) + feed.encode()).digest() for k in KEYS}
    assert view_of(0).home(feed).key == max(scores, key=lambda k: scores[k])


def test_removing_a_member_moves_only_its_feeds() -> None:
    full = view_of(0)
    two = Routing(MEMBERS[0], (MEMBERS[1],))
    for i in range(300):
        feed = f"task/t{i}"
        if full.home(feed).key != KEYS[2]:
            assert two.home(feed).key == full.home(feed).key


def test_pins_win_in_order_and_must_name_members() -> None:
    pins = (("doc/team-a/*", KEYS[2]), ("doc/*", KEYS[1]))
    views = [view_of(i, pins=pins) for i in range(3)]
    for v in views:
        assert v.home("doc/team-a/notes").key == KEYS[2]
        assert v.home("doc/team-a/deep/er").key == KEYS[2]  # fnmatch's * spans '/'
        assert v.home("doc/other").key == KEYS[1]
    with pytest.raises(ValueError, match="not a member"):
        Routing(MEMBERS[0], (MEMBERS[1],), pins=(("doc/*", KEYS[2]),))


def test_replicated_prefixes() -> None:
    v = view_of(0, replicate=("vouch/", "agent/"))
    assert v.replicated("vouch/global") and v.replicated("agent/" + KEYS[0]) and not v.replicated("doc/x")
    assert view_of(0).replicated("vouch/global")  # the default


def test_alone_a_relay_homes_everything() -> None:
    solo = Routing(MEMBERS[0])
    assert not solo.federated and solo.is_home("doc/x") and solo.is_home("auction/y")


@pytest.mark.parametrize("spec", ["http://h:1", "h:1#" + KEYS[0], "http://h:1#abc", "#" + KEYS[0]])
def test_bad_peer_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="a peer"):
        Member.parse(spec)


def test_peer_and_pin_parsing() -> None:
    assert Member.parse(f"http://10.0.0.2:8702/#{KEYS[1]}") == Member(KEYS[1], "http://10.0.0.2:8702")
    assert parse_pin(f"doc/team-a/*={KEYS[2]}") == ("doc/team-a/*", KEYS[2])
    with pytest.raises(ValueError, match="a pin is PATTERN=RELAYKEY"):
        parse_pin("doc/*")
    with pytest.raises(ValueError, match="distinct"):
        Routing(MEMBERS[0], (MEMBERS[0],))


def test_authority_namespaces_share_one_home() -> None:
    """Ledger, auctions and trust are homed together (cross-feed relay-signed steps)."""
    views = [view_of(i) for i in range(3)]
    for v in views:
        anchor = v.home("ledger/main").key
        assert {v.home(f).key for f in ("ledger/other", "vouch/global", "vouch/x",
                                         *(f"auction/a{i}" for i in range(50)))} == {anchor}
    pinned = view_of(0, pins=(("auction/special", KEYS[2]),))
    assert pinned.home("auction/special").key == KEYS[2]  # a pin still wins
