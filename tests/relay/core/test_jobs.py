"""relay/core/jobs.py: the fast seq reader agrees with the JSON, and a job's future is answered once."""
from __future__ import annotations

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st

from relay.core.jobs import fail, ok, wire_seq


@given(st.integers(0, 2**53), st.text(max_size=20))
def test_wire_seq_reads_the_seq_a_relay_wrote(seq: int, rest: str) -> None:
    line = json.dumps({"seq": seq, "x": rest}, separators=(",", ":"))
    assert wire_seq(line) == seq == json.loads(line)["seq"]


def test_wire_seq_gives_up_on_anything_else() -> None:
    for line in ('{"x":1,"seq":2}', '{"seq": 3,"x":1}', '{"seq":-1,"x":1}', '{"seq":1.5,"x":1}', '{"seq":}',
                 '{"seq":١,"x":1}', ""):
        assert wire_seq(line) == -1, line


async def test_a_future_is_answered_once_and_a_cancelled_one_is_left_alone() -> None:
    loop = asyncio.get_running_loop()
    a: asyncio.Future[int] = loop.create_future()
    ok(a, 1)
    fail(a, RuntimeError("late"))
    ok(a, 2)
    assert a.result() == 1
    b: asyncio.Future[int] = loop.create_future()
    b.cancel()
    fail(b, RuntimeError("after cancel"))
    ok(b, 3)
    assert b.cancelled()


def test_ingests_queued_together_are_taken_as_one_batch() -> None:
    from collections import deque

    from relay.core.jobs import Ingest, Job, Sync, joined_ingests

    jobs: deque[Job] = deque([Ingest('{"seq":2}'), Ingest('{"seq":3}\n{"seq":4}'), Sync(), Ingest('{"seq":5}')])
    first = jobs.popleft()
    assert isinstance(first, Ingest)
    assert joined_ingests(first, jobs) == '{"seq":2}\n{"seq":3}\n{"seq":4}'
    assert len(jobs) == 2 and isinstance(jobs[0], Sync)  # the rest waits its turn
