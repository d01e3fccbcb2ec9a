"""relay/core/verifier.py: signature checks in a real child process, a batch per loop turn; the
same answers in-process while the child starts, after it dies and when it is turned off."""
from __future__ import annotations

import asyncio
import dataclasses

from collab.events import Event
from collab.keys import Keypair

from relay.core.verifier import Verifier

ALICE = Keypair.from_seed(b"A" * 32)
MALLORY = Keypair.from_seed(b"M" * 32)


def batch(n: int) -> list[tuple[Event, bytes, bool]]:
    """``n`` events with their signing bytes and whether the signature is good (every third is
    signed by another key than its author)."""
    out = []
    for i in range(n):
        ev = Event.create(ALICE, "note/v", "a.b", {"i": i}, ts=i)
        if i % 3 == 2:  # another key's signature over the same bytes
            ev = dataclasses.replace(ev, sig=MALLORY.sign(ev.signing_bytes()).hex())
        out.append((ev, ev.signing_bytes(), i % 3 != 2))
    return out


async def answers(v: Verifier, items: list[tuple[Event, bytes, bool]]) -> list[bool]:
    return list(await asyncio.gather(*(v.check(ev, signed) for ev, signed, _ in items)))


async def wait_ready(v: Verifier) -> None:
    """Checks go to the child once it said it is ready; until then they are made here. A check
    starts it."""
    await answers(v, batch(1))
    await asyncio.wait_for(v.up.wait(), 60)


async def test_the_child_answers_a_batch_per_loop_turn_as_verify_would() -> None:
    items = batch(30)
    v = Verifier()
    try:
        await wait_ready(v)
        here = v.local_batches
        assert await answers(v, items) == [good for _, _, good in items]
        assert v.local_batches == here  # all of it in the child, as one request
    finally:
        await v.close()


async def test_a_dead_child_costs_nothing_but_time() -> None:
    items = batch(12)
    v = Verifier()
    try:
        await wait_ready(v)
        assert v._proc is not None
        v._proc.kill()  # whatever was in flight is checked here; a later batch starts it again
        assert await answers(v, items) == [good for _, _, good in items]
        await asyncio.wait_for(v.down.wait(), 30)  # its reader saw the end of its output
        v._next_start = 0.0  # no restart delay in the test
        await wait_ready(v)
        assert v.restarts >= 1
        assert await answers(v, items) == [good for _, _, good in items]
    finally:
        await v.close()


async def test_turned_off_it_checks_in_process() -> None:
    items = batch(6)
    v = Verifier(enabled=False)
    assert await answers(v, items) == [good for _, _, good in items]
    assert v._proc is None and v.local_batches == 1
    await v.close()


async def test_the_child_signs_receipts_with_the_relay_key() -> None:
    relay = Keypair.from_seed(b"R" * 32)
    receipts = [b"receipt %d" % i for i in range(5)]
    v = Verifier(key=relay)
    v.min_signs = 1  # every request to the child once it is up, however small
    try:
        here = await v.sign(receipts)  # before the child is up: signed in-process
        await wait_ready(v)
        local = v.local_batches
        assert await v.sign(receipts) == here == [relay.sign(r) for r in receipts]
        signs = [v.sign(receipts[:i]) for i in range(1, 4)]  # queued behind one another
        assert await asyncio.gather(*signs) == [[relay.sign(r) for r in receipts[:i]] for i in range(1, 4)]
        assert v.local_batches == local
        v._proc.kill()  # type: ignore[union-attr]
        assert await v.sign(receipts) == here  # in-process while it is gone
    finally:
        await v.close()


async def test_signatures_queued_with_a_lone_one_are_all_made() -> None:
    """Regression: two workers asking for receipts in one loop turn of a quiet relay. The first
    was made here; the one queued with it went nowhere until some later request woke the
    verifier, so on a relay that then fell quiet its feed never drained. Both ways: single
    receipts made here while checks are in the child, and every request to the child."""
    relay = Keypair.from_seed(b"R" * 32)
    v = Verifier(key=relay)
    try:
        await wait_ready(v)
        for min_signs in (2, 1):
            v.min_checks, v.min_signs = 1, min_signs
            checks = [v.check(ev, signed) for ev, signed, _ in batch(2)]
            futs = [v.sign([bytes([i])]) for i in range(3)]
            assert await asyncio.gather(*checks) == [True, True]
            assert await asyncio.wait_for(asyncio.gather(*futs), 2) == [[relay.sign(bytes([i]))] for i in range(3)]
        assert v.restarts == 0
    finally:
        await v.close()


async def test_a_request_too_small_for_a_round_trip_is_made_here() -> None:
    relay = Keypair.from_seed(b"R" * 32)
    items = batch(3)
    v = Verifier(key=relay)
    try:
        await wait_ready(v)
        local, small = v.local_batches, v.small
        v.min_checks = v.min_signs = 1  # everything to the child
        assert await answers(v, items[:1]) == [True]
        assert await v.sign([b"r"]) == [relay.sign(b"r")]
        assert v.small == small
        v.min_checks = v.min_signs = 2  # a single item is done here, two or more go
        assert await answers(v, items[2:]) == [False]
        assert await v.sign([b"r"]) == [relay.sign(b"r")]
        assert v.small == small + 2
        assert await answers(v, items) == [good for _, _, good in items]
        assert await v.sign([b"r", b"s"]) == [relay.sign(b"r"), relay.sign(b"s")]
        assert v.small == small + 2 and v.local_batches == local and v.restarts == 0
    finally:
        await v.close()


async def test_a_small_batch_behind_one_at_the_child_is_answered_after_it() -> None:
    """Checks resolve in the order they were submitted, whichever process makes them: a small
    batch (made in-process) queued while a large one is at the child waits for it (the sequencer
    hands publishes off in the order their checks resolve)."""
    v = Verifier()
    try:
        await wait_ready(v)
        order: list[str] = []
        large = [v.check(ev, signed) for ev, signed, _ in batch(20)]
        await asyncio.sleep(0)  # the large batch goes to the child on this loop turn
        assert v.requests >= 1 and v._inflight
        small = [v.check(ev, signed) for ev, signed, _ in batch(2)]
        large[-1].add_done_callback(lambda _: order.append("large"))
        small[-1].add_done_callback(lambda _: order.append("small"))
        await asyncio.gather(*large, *small)
        assert order == ["large", "small"]
    finally:
        await v.close()
