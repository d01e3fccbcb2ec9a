"""collab/subscription.py: a verified, bounded stream of one feed (a real relay and real clients;
pausing a full queue and closing are also exercised in test_client.py)."""
from __future__ import annotations

import asyncio
import logging

import pytest

from collab.client import Client
from collab.errors import ColonyError
from collab.events import GENESIS, Record
from collab.keys import Keypair
from collab.protocol import Presence
from collab.subscription import Signal, until
from relay.ops.runner import Running

pytestmark = pytest.mark.timeout(60)


async def test_a_signal_wakes_every_current_waiter_once() -> None:
    sig = Signal()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await sig.wait()
        woken.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)  # let them start waiting
    sig.notify()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(woken) == [0, 1, 2]
    later = asyncio.create_task(sig.wait())  # a new waiter waits for the next notify
    await asyncio.sleep(0)
    assert not later.done()
    sig.notify()
    await asyncio.wait_for(later, 5)


async def test_until_checks_first_and_after_every_notify() -> None:
    sig, state = Signal(), {"n": 0}

    def check() -> None:
        if state["n"] < 0:
            raise ColonyError("gone")

    async def bump() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
            state["n"] += 1
            sig.notify()

    bumper = asyncio.create_task(bump())
    await until(sig, lambda: state["n"] == 3, check, 5)
    await bumper
    await until(sig, lambda: True, check, 1)  # already true: returns without a notify
    state["n"] = -1
    with pytest.raises(ColonyError):
        await until(sig, lambda: False, check, 5)
    with pytest.raises(asyncio.TimeoutError):
        await until(Signal(), lambda: False, lambda: None, 0.05)


async def test_callbacks_run_in_feed_order_and_a_failing_one_does_not_stop_delivery(
        relay: Running, caplog: pytest.LogCaptureFixture) -> None:
    feed = "chat/cb"
    seen: list[int] = []

    def on_record(rec: Record) -> None:
        seen.append(rec.seq)
        if rec.seq == 2:
            raise ValueError("a bug in the agent's callback")

    async with Client(relay.url, Keypair.generate()) as pub, Client(relay.url) as reader:
        for i in range(3):
            await pub.publish(feed, "msg", {"n": i})
        with caplog.at_level(logging.ERROR, logger="collab.subscription"):
            sub = await reader.subscribe(feed, on_record=on_record)
            assert sub.max_queue == 0 and sub.head == GENESIS
            await sub.wait_seq(3, 10)
            await pub.publish(feed, "msg", {"n": 3})
            await sub.wait_seq(4, 10)
        assert seen == [1, 2, 3, 4] and sub.seq == 4 and sub.queued == 0
        assert any("callback" in r.getMessage() for r in caplog.records)
        with pytest.raises(RuntimeError, match="callbacks only"):
            await sub.__anext__()


async def test_presence_tracks_who_follows_the_feed(relay: Running) -> None:
    feed = "chat/presence"
    events: list[Presence] = []
    a, b = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, a) as ca:
        sub = await ca.subscribe(feed, on_presence=events.append)
        await sub.wait_synced(10)
        await until(sub._signal, lambda: a.public_hex in sub.participants, lambda: None, 10)
        async with Client(relay.url, b) as cb:
            other = await cb.subscribe(feed)
            await other.wait_synced(10)
            await until(sub._signal, lambda: b.public_hex in sub.participants, lambda: None, 10)
        await until(sub._signal, lambda: b.public_hex not in sub.participants, lambda: None, 10)
    ops = [(e.op, e.keys) for e in events]
    assert ("join", (b.public_hex,)) in ops and ("leave", (b.public_hex,)) in ops
    assert ops.index(("join", (b.public_hex,))) < ops.index(("leave", (b.public_hex,)))


async def test_a_subscription_from_a_seq_starts_after_it(relay: Running) -> None:
    feed = "chat/since"
    async with Client(relay.url, Keypair.generate()) as c:
        for i in range(5):
            await c.publish(feed, "msg", {"n": i})
        sub = await c.subscribe(feed, since=3)
        assert sub.head is None  # unknown until the first record: the client cannot check prev yet
        await sub.wait_seq(5, 10)
        assert sub.queued == 2
        got = [await anext(sub), await anext(sub)]
        assert [r.seq for r in got] == [4, 5] and isinstance(got[0], Record)
        await sub.close()
        assert sub.closed
        with pytest.raises(ColonyError, match="closed"):
            await sub.wait_seq(6, 1)
