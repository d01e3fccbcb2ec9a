"""Events written under a capability (``doc.update`` bodies with ``cap``): what the relay accepts
from any publisher, and what replay verifies in a log it did not make."""
from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Text

from collab.capability import Capability
from collab.events import GENESIS, Event, Record, b64
from collab.keys import Keypair
from collab.replay import replay
from relay.ops.runner import Running
from tests.rawclient import Raw

FEED = "doc/capped"


def upd(text: str) -> str:
    d = Doc()
    d.get("text", type=Text).insert(0, text)
    return b64(d.get_update())


def chain(relay: Keypair, events: list[Event]) -> list[dict[str, Any]]:
    out, prev = [], GENESIS
    for i, ev in enumerate(events, 1):
        rec = Record.seal(relay, ev, i, prev, rtime=ev.ts + 1)  # expiry is judged on rtime (issue 13)
        out.append(rec.to_wire())
        prev = rec.hash
    return out


@pytest.fixture
def keys() -> dict[str, Keypair]:
    return {name: Keypair.generate() for name in ("owner", "relay", "other")}


def test_replay_accepts_capability_writes(keys: dict[str, Keypair]) -> None:
    owner, relay = keys["owner"], keys["relay"]
    cap = Capability.issue(owner, FEED, write=True, ttl_ms=60_000, now=1_000)
    events = [
        Event.create(owner, FEED, "feed.policy", {"policy": "members"}, ts=1_000),
        Event.create(relay, FEED, "doc.update", {"update": upd("by cap"), "cap": cap.to_wire()}, ctx=1, ts=2_000),
    ]
    result = replay(chain(relay, events))
    assert result.verified, result.anomalies
    assert result.view() == {"text": "by cap"}


@pytest.mark.parametrize(("case", "kind"), [
    ("not_owner", "unauthorized"), ("expired", "unauthorized"), ("read_only", "unauthorized"),
    ("wrong_feed", "unauthorized"), ("forged", "invalid"), ("bad_shape", "invalid"), ("null", "invalid"),
    ("members_without_cap", "unauthorized"),
])
def test_replay_flags_bad_capability_writes(keys: dict[str, Keypair], case: str, kind: str) -> None:
    owner, relay, other = keys["owner"], keys["relay"], keys["other"]
    good = Capability.issue(owner, FEED, write=True, ttl_ms=60_000, now=1_000).to_wire()
    cap: Any = {
        "not_owner": Capability.issue(other, FEED, write=True, ttl_ms=60_000, now=1_000).to_wire(),
        "expired": Capability.issue(owner, FEED, write=True, ttl_ms=500, now=1_000).to_wire(),
        "read_only": Capability.issue(owner, FEED, ttl_ms=60_000, now=1_000).to_wire(),
        "wrong_feed": Capability.issue(owner, "doc/other", write=True, ttl_ms=60_000, now=1_000).to_wire(),
        "forged": {**good, "exp": good["exp"] * 2},
        "bad_shape": {"issuer": owner.public_hex},
        "null": None,
        "members_without_cap": ...,
    }[case]
    body = {"update": upd("x")} if cap is ... else {"update": upd("x"), "cap": cap}
    events = [
        Event.create(owner, FEED, "feed.policy", {"policy": "members"}, ts=1_000),
        Event.create(relay, FEED, "doc.update", body, ctx=1, ts=2_000),
    ]
    result = replay(chain(relay, events))
    assert not result.verified
    assert [(a.seq, a.kind) for a in result.anomalies] == [(2, kind)], result.anomalies


async def test_relay_checks_capabilities_on_native_publishes(relay: Running) -> None:
    """A capability is a bearer grant: any agent may write with one; a bogus one is refused."""
    owner, agent = Keypair.generate(), Keypair.generate()
    feed = "doc/bearer"
    o = await Raw.connect(relay.ws_url, owner)
    a = await Raw.connect(relay.ws_url, agent)

    async def pub(raw: Raw, ev: Event, rid: str) -> dict[str, Any]:
        return await raw.request({"t": "pub", "event": ev.to_wire()}, rid)

    early = Capability.issue(owner, feed, write=True)
    r = await pub(a, Event.create(agent, feed, "doc.update", {"update": upd("0"), "cap": early.to_wire()}), "e")
    assert (r["t"], r.get("code")) == ("error", "unauthorized")  # no owner yet: nothing can be granted
    assert (await pub(o, Event.create(owner, feed, "feed.policy", {"policy": "members"}), "p"))["t"] == "ok"
    r = await pub(a, Event.create(agent, feed, "doc.update", {"update": upd("1")}), "n")
    assert (r["t"], r.get("code")) == ("error", "unauthorized")
    cap = Capability.issue(owner, feed, write=True)
    r = await pub(a, Event.create(agent, feed, "doc.update", {"update": upd("2"), "cap": cap.to_wire()}), "c")
    assert r["t"] == "ok" and r["seq"] == 2
    forged = {**cap.to_wire(), "exp": cap.exp + 1}
    r = await pub(a, Event.create(agent, feed, "doc.update", {"update": upd("3"), "cap": forged}), "f")
    assert (r["t"], r.get("code")) == ("error", "bad_signature")
    ro = Capability.issue(owner, feed)
    r = await pub(a, Event.create(agent, feed, "doc.update", {"update": upd("4"), "cap": ro.to_wire()}), "r")
    assert (r["t"], r.get("code")) == ("error", "unauthorized")
    r = await pub(a, Event.create(agent, feed, "doc.update", {"update": upd("5"), "cap": cap.to_wire(), "x": 1}), "x")
    assert (r["t"], r.get("code")) == ("error", "invalid")
    await o.close()
    await a.close()


def test_the_verified_capability_cache_hits_only_the_same_object(keys: dict[str, Keypair]) -> None:
    """``from_wire_cached`` looks a capability up by its signature: a hit must be the object that
    was verified, member for member and type for type; anything else is verified afresh."""
    from collab.errors import BadSignature, InvalidEvent

    cap = Capability.issue(keys["owner"], FEED, write=True, ttl_ms=60_000)
    first = Capability.from_wire_cached(cap.to_wire())
    assert first == cap and Capability.from_wire_cached(cap.to_wire()) is first  # the same, again: a hit
    longer = {**cap.to_wire(), "exp": cap.exp + 1}  # the same signature on other members
    with pytest.raises(BadSignature):
        Capability.from_wire_cached(longer)
    typed = {**cap.to_wire(), "iat": True} if cap.iat == 1 else {**cap.to_wire(), "iat": float(cap.iat)}
    with pytest.raises(InvalidEvent):  # equal in Python, not in JSON
        Capability.from_wire_cached(typed)
    with pytest.raises(InvalidEvent):
        Capability.from_wire_cached({"sig": cap.sig})
