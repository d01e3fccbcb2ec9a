"""Local replay: rebuild state at any seq and report every anomaly in a log."""
from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from collab.client import Client
from collab.doc import Doc
from collab.errors import RelayError
from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from collab.replay import Anomaly, fetch_records, parse_records, replay, replay_feed
from relay.ops.runner import Running

RELAY = Keypair.from_seed(b"R" * 32)
OWNER = Keypair.from_seed(b"O" * 32)
OTHER = Keypair.from_seed(b"X" * 32)


def seal(events: list[Event], start_prev: str = GENESIS) -> list[Record]:
    out, prev = [], start_prev
    for i, ev in enumerate(events, 1):
        rec = Record.seal(RELAY, ev, i, prev, rtime=1000 + i)
        out.append(rec)
        prev = rec.hash
    return out


def msgs(n: int, feed: str = "chat/log", key: Keypair = OWNER) -> list[Event]:
    return [Event.create(key, feed, "msg", {"n": i}, ctx=i, ts=5000 + i) for i in range(n)]


def at(anomalies: list[Anomaly], kind: str) -> list[int]:
    return [a.seq for a in anomalies if a.kind == kind]


async def write_doc(relay: Running, feed: str, parts: list[str]) -> list[dict[str, Any]]:
    async with Client(relay.url, Keypair.generate()) as c, Doc(c, feed) as doc:
        for p in parts:
            doc.text += p
            await doc.flushed(5)
    return await fetch_records(relay.url, feed)


async def test_replay_at_a_seq_gives_the_earlier_text(relay: Running) -> None:
    raw = await write_doc(relay, "doc/history", ["alpha ", "beta ", "gamma"])
    assert [r["seq"] for r in raw] == [1, 2, 3]
    assert replay(raw, at=1).view() == {"text": "alpha "}
    two = replay(raw, at=2)
    assert two.view() == {"text": "alpha beta "} and two.seq == 2 and two.head == Record.from_wire(raw[1]).hash
    full = await replay_feed(relay.url, "doc/history")
    async with httpx.AsyncClient() as http:
        info = (await http.get(relay.url + "/feeds/doc/history")).json()
    assert full.verified and full.anomalies == [] and full.problems == []
    assert full.view() == info["state"] == {"text": "alpha beta gamma"}
    assert (full.seq, full.head) == (info["seq"], info["head"])
    assert full.access.owner == info["owner"] and full.access.policy == info["policy"]
    assert replay(raw, at=0).view() == {"text": ""}


async def test_fetch_records_pages_through_the_http_api(relay: Running) -> None:
    async with Client(relay.url, Keypair.generate()) as c:
        for i in range(7):
            await c.publish("chat/paged", "msg", {"i": i})
    paged = await fetch_records(relay.url, "chat/paged", page=3)
    assert [r["seq"] for r in paged] == list(range(1, 8))
    assert paged == await fetch_records(relay.url, "chat/paged")
    assert [r["seq"] for r in await fetch_records(relay.url, "chat/paged", since=5, page=1)] == [6, 7]
    result = replay(paged)
    assert result.verified and result.state == 7
    with pytest.raises(RelayError) as info:
        await fetch_records(relay.url, "not a feed")
    assert info.value.code == "invalid"


async def test_replay_detects_a_tampered_record(relay: Running) -> None:
    raw = await write_doc(relay, "doc/tamper", ["one ", "two ", "three"])
    body = copy.deepcopy(raw)
    body[1]["event"]["body"]["update"] = raw[0]["event"]["body"]["update"]
    result = replay(body)
    assert not result.verified
    assert at(result.anomalies, "bad_signature") == [2]
    assert at(result.anomalies, "gap") == [2]  # the forged record is not folded
    assert "two" not in result.view()["text"]

    receipt = copy.deepcopy(raw)
    receipt[2]["rtime"] += 1
    result = replay(receipt)
    assert at(result.anomalies, "bad_receipt") == [3] and result.seq == 2

    sig = copy.deepcopy(raw)
    sig[0]["event"]["sig"] = Keypair.generate().sign(b"x").hex()
    assert at(replay(sig).anomalies, "bad_signature") == [1]


async def test_replay_detects_a_gap(relay: Running) -> None:
    raw = await write_doc(relay, "doc/gap", ["a", "b", "c", "d"])
    result = replay(raw[:2] + raw[3:])
    assert at(result.anomalies, "gap") == [3] and not result.verified
    assert result.seq == 4 and "c" not in result.view()["text"]
    assert "chain_break" not in result.kinds()  # after a gap, prev cannot be checked


def test_replay_detects_a_fork_and_follows_the_chain_that_continues() -> None:
    recs = seal(msgs(4))
    rival = Record.seal(RELAY, Event.create(OTHER, "chat/log", "msg", {"rival": True}, ctx=1), 2, recs[0].hash)
    for order in ([*recs, rival], [recs[0], rival, *recs[1:]]):
        result = replay(order)
        assert at(result.anomalies, "fork") == [2]
        assert "chain_break" not in result.kinds()
        assert result.head == recs[-1].hash and result.state == 4


def test_replay_detects_a_chain_break() -> None:
    recs = seal(msgs(3))
    broken = Record.seal(RELAY, recs[2].event, 3, "ab" * 32)
    result = replay([*recs[:2], broken])
    assert at(result.anomalies, "chain_break") == [3] and result.state == 3


def test_replay_detects_causal_anomalies_and_duplicate_events() -> None:
    events = msgs(3)
    ahead = Event.create(OWNER, "chat/log", "msg", {"from": "the future"}, ctx=7)
    recs = seal([events[0], ahead, events[1], events[1]])
    result = replay(recs)
    assert at(result.anomalies, "causal_ahead") == [2]
    assert at(result.anomalies, "duplicate_event") == [4]
    assert [a.kind for a in result.anomalies if a.seq == 4] == ["duplicate_event"]
    assert result.state == 4  # folded exactly like the relay would fold the stored log


def test_unordered_input_is_reported_but_replays_in_seq_order() -> None:
    recs = seal(msgs(5))
    result = replay(list(reversed(recs)))
    assert result.kinds() == {"unordered"} and result.seq == 5 and result.head == recs[-1].hash


def test_access_is_folded_and_unauthorized_writes_are_reported() -> None:
    feed = "chat/club"
    events = [
        Event.create(OWNER, feed, "feed.policy", {"policy": "members"}),
        Event.create(OWNER, feed, "acl.grant", {"key": OTHER.public_hex, "read": True, "write": True}, ctx=1),
        Event.create(OTHER, feed, "msg", {"hi": 1}, ctx=2),
    ]
    ok = replay(seal(events))
    assert ok.verified and ok.access.policy == "members" and ok.access.owner == OWNER.public_hex
    assert ok.access.writers == {OTHER.public_hex} and ok.state == 1  # control kinds are not applied
    stranger = Keypair.generate()
    bad = [
        *events,
        Event.create(stranger, feed, "msg", {"sneak": 1}, ctx=3),
        Event.create(OTHER, feed, "acl.revoke", {"key": OTHER.public_hex}, ctx=4),
    ]
    result = replay(seal(bad))
    assert at(result.anomalies, "unauthorized") == [4, 5]
    assert replay(seal(bad), at=2).access.writers == {OTHER.public_hex}


def test_unparseable_records_become_anomalies_not_crashes() -> None:
    recs = seal(msgs(2))
    raw: list[Any] = [recs[0].to_wire(), {"seq": 2, "junk": True}, "nonsense", recs[1].to_wire()]
    parsed, problems = parse_records(raw)
    assert [r.seq for r in parsed] == [1, 2]
    assert [(p.seq, p.kind) for p in problems] == [(2, "invalid"), (0, "invalid")]
    result = replay(raw)
    assert result.seq == 2 and not result.verified
    empty = replay([])
    assert empty.verified and empty.seq == 0 and empty.head == GENESIS
    assert replay([], feed="doc/none").view() == {"text": ""}
