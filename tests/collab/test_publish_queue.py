"""collab.publish_queue: the client's outbox of unacknowledged publishes, sans I/O."""
from __future__ import annotations

import pytest

from collab.events import Event
from collab.keys import Keypair
from collab.publish_queue import PublishQueue

KEY = Keypair.generate()


def events(n: int) -> list[Event]:
    return [Event.create(KEY, "note/q", "note", {"i": i}) for i in range(n)]


async def test_at_most_max_inflight_are_sent_and_replies_make_room() -> None:
    q = PublishQueue(2)
    evs = events(4)
    futs = [q.add(e) for e in evs]
    assert q.add(evs[0]) is futs[0] and len(q) == 4  # the same event: the same future
    assert list(q.to_send()) == evs[:2]
    assert list(q.to_send()) == []
    p = q.settled(evs[0].id)
    assert p is not None and p.event is evs[0]
    q.remove(evs[0].id)
    assert list(q.to_send()) == [evs[2]] and len(q) == 3


async def test_a_retry_is_sent_again_and_a_restart_resends_everything_in_order() -> None:
    q = PublishQueue(10)
    evs = events(3)
    for e in evs:
        q.add(e)
    assert list(q.to_send()) == evs
    q.settled(evs[1].id)  # refused, retryable: sent again later
    assert q.requeue(evs[1].id)
    assert list(q.to_send()) == [evs[1]]
    q.restart()  # a new connection: nothing is on the wire
    assert list(q.to_send()) == evs
    q.remove(evs[2].id)
    assert not q.requeue(evs[2].id)


async def test_fail_all_fails_every_future_and_empties_the_queue() -> None:
    q = PublishQueue(1)
    futs = [q.add(e) for e in events(2)]
    q.fail_all(RuntimeError("gone"))
    assert len(q) == 0 and list(q.to_send()) == []
    for f in futs:
        with pytest.raises(RuntimeError, match="gone"):
            f.result()
