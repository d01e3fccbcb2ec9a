"""relay.endpoints.yjs_awareness: the awareness states of one document (y-protocols' rules), sans I/O."""
from __future__ import annotations

import json

from relay.core.limits import YjsLimits
from relay.endpoints.yjs_awareness import AGENT, AwarenessRoom
from relay.endpoints.yjs_protocol import AwarenessEntry

LIMITS = YjsLimits(awareness_per_sec=1.0, awareness_burst=3, max_awareness_bytes=200,
                   max_awareness_state_bytes=50, max_awareness_clients=2, sync_requests_per_sec=1.0,
                   sync_requests_burst=2)


def e(client: int, clock: int, state: object) -> AwarenessEntry:
    return AwarenessEntry(client, clock, json.dumps(state, separators=(",", ":")))


def test_awareness_clock_rules() -> None:
    room = AwarenessRoom(LIMITS)
    a, b = object(), object()
    assert room.apply(a, [e(1, 0, {"x": 1})], 0) == ([], [])   # clock 0 is not newer than nothing (y-protocols)
    assert room.apply(a, [e(1, 1, {"x": 1})], 0) == ([e(1, 1, {"x": 1})], [])
    assert room.apply(a, [e(1, 1, {"x": 2})], 0) == ([], [])   # same clock: ignored
    assert room.apply(a, [e(1, 2, {"x": 1})], 0)[0] == [e(1, 2, {"x": 1})]  # renewal is relayed
    assert room.snapshot() == [e(1, 2, {"x": 1})]
    assert room.apply(b, [e(1, 2, None)], 0)[0] == [e(1, 2, None)]  # null with the same clock removes
    assert room.snapshot() == []


def test_awareness_ownership_limits_and_expiry() -> None:
    room = AwarenessRoom(LIMITS)
    a, b = object(), object()
    room.apply(a, [e(1, 1, {}), e(2, 1, {})], 0)
    changed, refused = room.apply(a, [e(3, 1, {})], 0)
    assert changed == [] and "more than 2" in refused[0]
    assert room.apply(a, [e(1, 2, {"s": "x" * 60})], 0)[1] == ["awareness state too large"]
    assert room.apply(b, [e(5, 1, {AGENT: "k"})], 0)[1][0].startswith("awareness states with a top-level")
    # a reconnecting client takes its id over: the old connection's end no longer removes it
    assert room.apply(b, [e(2, 2, {"again": True})], 0)[0] == [e(2, 2, {"again": True})]
    assert room.drop(a) == [e(1, 1, None)]
    assert [x.client for x in room.snapshot()] == [2]
    # agents' ids belong to the relay
    agent = room.set_agent(7, '{"user":{"name":"A"}}', 1000.0)
    assert agent is not None and agent.clock >= 1000
    assert room.apply(b, [e(7, agent.clock + 1, {"evil": 1})], 0)[1] == ["client id 7 is an agent's"]
    again = room.set_agent(7, '{"user":{"name":"B"}}', 1000.0)
    assert again is not None and again.clock == agent.clock + 1
    # expiry removes clients that stopped renewing, never agents
    assert room.expire(LIMITS.awareness_timeout * 1000 + 1) == [e(2, 2, None)]
    assert [x.client for x in room.snapshot()] == [7]
    assert room.remove_agent(7) == AwarenessEntry(7, again.clock, "null")
