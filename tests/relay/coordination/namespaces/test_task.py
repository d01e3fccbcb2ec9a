"""relay/coordination/namespaces/task.py: a subtask that misses its heartbeat window is marked
``task.stalled`` by the relay at the deadline."""
from __future__ import annotations

import asyncio

from collab.events import Event
from collab.keys import Keypair
from relay.coordination.namespaces.task import TaskPlugin
from relay.server import Relay


async def test_a_silent_subtask_is_stalled_at_its_deadline(site: Relay) -> None:
    hub, leader, worker = site.hub, Keypair.generate(), Keypair.generate()
    feed = "task/unit"
    stalled = asyncio.Event()
    hub.listeners.append(lambda rec, _j: stalled.set() if rec.event.kind == "task.stalled" else None)
    await hub.publish(Event.create(leader, feed, "task.open", {"title": "t"}), leader.public_hex)
    spawn = {"sub": "a", "assignee": worker.public_hex, "title": "a", "heartbeat_ms": 500}
    await hub.publish(Event.create(leader, feed, "task.spawn", spawn), leader.public_hex)
    rt = await hub.runtime(feed)
    p = TaskPlugin()
    (deadline, what), = p.timers(rt.state)
    assert what == "stall:a" and deadline == rt.state.subs["a"].last_seen + 500
    await asyncio.wait_for(stalled.wait(), 20)
    sub = rt.state.subs["a"]
    assert sub.stalled
    assert list(p.timers(rt.state)) == []  # stalled once: nothing more to arm
    assert await p.on_timer(site.coordinator, rt, deadline, "stall:nope") is None
    assert await p.on_timer(site.coordinator, rt, deadline, "other") is None


def test_the_plugin_follows_task_feeds_without_a_gate() -> None:
    p = TaskPlugin()
    assert p.namespace == "task" and p.follows and not p.gated_kinds and not p.replay_on_start
