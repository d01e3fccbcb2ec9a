"""The directory's feeds (collab/namespaces/agent.py): owner-only profiles, latest wins."""
from __future__ import annotations

from typing import Any

import pytest

from collab.access import Access
from collab.errors import InvalidEvent, Unauthorized
from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from collab.namespaces.agent import AgentNamespace, AgentState
from collab.namespaces.base import Admission, Registry
from collab.namespaces.generic import GenericNamespace
from collab.replay import replay

RELAY = Keypair.from_seed(b"R" * 32)
OWNER = Keypair.from_seed(b"O" * 32)
OTHER = Keypair.from_seed(b"X" * 32)
FEED = "agent/" + OWNER.public_hex
NS = AgentNamespace()


def adm(now: int = 1000) -> Admission:
    return Admission(now, RELAY.public_hex)


def fold(events: list[tuple[Event, int]]) -> tuple[AgentState, list[Record]]:
    state, recs, head = NS.initial(FEED), [], GENESIS
    for ev, now in events:
        NS.validate(state, ev, adm(now))
        rec = Record.seal(RELAY, ev, len(recs) + 1, head, now)
        before = state
        state = NS.apply(state, rec)
        assert before.profile is None or before is not state
        recs.append(rec)
        head = rec.hash
    return state, recs


def profile(body: Any, key: Keypair = OWNER, feed: str = FEED, ts: int = 1000) -> Event:
    return Event.create(key, feed, "agent.profile", body, ts=ts)


def test_owner_writes_and_latest_wins() -> None:
    first = profile({"name": "coder", "description": "writes code", "capabilities": ["python", "review"]})
    second = profile({"name": "coder-2"}, ts=2000)
    state, recs = fold([(first, 1000), (second, 2500)])
    assert state.profile == {"name": "coder-2"} and (state.rtime, state.seq) == (2500, 2)
    assert NS.view(state) == {"key": OWNER.public_hex, "name": "coder-2", "description": "", "capabilities": [],
                              "updated": 2500}
    state1, _ = fold([(first, 1000)])
    assert NS.view(state1) == {"key": OWNER.public_hex, "name": "coder", "description": "writes code",
                               "capabilities": ["python", "review"], "updated": 1000}
    assert NS.view(NS.initial(FEED)) == {"key": OWNER.public_hex, "name": None, "description": "",
                                         "capabilities": [], "updated": None}
    assert NS.load(FEED, NS.dump(state)) == state
    reg = Registry(GenericNamespace())
    reg.register(NS)
    result = replay(recs, registry=reg)
    assert result.verified and result.state == state


def test_only_the_owner_writes() -> None:
    with pytest.raises(Unauthorized) as info:
        NS.validate(NS.initial(FEED), profile({"name": "impostor"}, key=OTHER), adm())
    assert info.value.code == "unauthorized"
    with pytest.raises(Unauthorized):
        NS.validate(NS.initial(FEED), profile({"name": "relay"}, key=RELAY), adm())
    # a record the relay should have refused changes nothing
    good, _ = fold([(profile({"name": "real"}), 1000)])
    bad = Record.seal(RELAY, profile({"name": "impostor"}, key=OTHER), 2, GENESIS, 1100)
    assert NS.apply(good, bad) == good


def test_access_is_fixed_by_the_name() -> None:
    assert NS.initial_access(FEED) == Access(policy="signed", owner=OWNER.public_hex)
    assert NS.initial_access("agent/nope") == Access(policy="signed", owner=None)


@pytest.mark.parametrize("feed", [
    "agent/" + OWNER.public_hex.upper(), "agent/" + OWNER.public_hex[:-1], "agent/" + OWNER.public_hex + "0",
    "agent/" + OWNER.public_hex + "/x", "agent/me",
])
def test_feed_name_rules(feed: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        NS.validate(NS.initial(feed), profile({"name": "n"}, feed=feed), adm())
    assert info.value.code == "invalid"


@pytest.mark.parametrize("body", [
    "coder", {}, {"description": "no name"}, {"name": ""}, {"name": "n" * 65}, {"name": 5},
    {"name": "n", "description": "d" * 1001}, {"name": "n", "description": None},
    {"name": "n", "capabilities": "python"}, {"name": "n", "capabilities": [""]},
    {"name": "n", "capabilities": ["c" * 65]}, {"name": "n", "capabilities": [1]},
    {"name": "n", "capabilities": ["a", "a"]}, {"name": "n", "capabilities": [f"c{i}" for i in range(33)]},
    {"name": "n", "online": True},
])
def test_body_validation(body: Any) -> None:
    with pytest.raises(InvalidEvent) as info:
        NS.validate(NS.initial(FEED), profile(body), adm())
    assert info.value.code == "invalid"


def test_limits_accepted() -> None:
    body = {"name": "n" * 64, "description": "d" * 1000, "capabilities": [f"{i:0>64}" for i in range(32)]}
    state, _ = fold([(profile(body), 1000)])
    assert NS.view(state)["capabilities"] == body["capabilities"]
    with pytest.raises(InvalidEvent):
        NS.validate(state, Event.create(OWNER, FEED, "agent.status", {"name": "n"}, ts=1), adm())
