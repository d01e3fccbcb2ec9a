"""collab/childpipe.py: frames cut from any split of the stream, and a real child process
answering frames through a ChildPipe (a large request, the end of the child)."""
from __future__ import annotations

import asyncio
import sys

from hypothesis import given
from hypothesis import strategies as st

from collab.childpipe import ChildPipe, FrameBuffer, frame

# a child that answers each frame with its payload reversed, after a first frame "ready"
ECHO = "import sys\nfrom collab.childpipe import serve\nserve(0, 1, lambda p: p[::-1], b'ready')\n"


@given(st.lists(st.binary(max_size=30), max_size=6), st.data())
def test_frames_survive_any_split(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    buf, got, prev = FrameBuffer(), [], 0
    for c in [*cuts, len(stream)]:
        got += buf.feed(stream[prev:c])
        prev = c
    assert got == payloads
    assert all(type(p) is bytes for p in got)


def test_a_large_frame_in_many_reads_then_more_frames() -> None:
    """A document's state arrives in 64 KiB reads: gathered (each byte copied once), then cut
    exactly, with the frames that follow it in the same read."""
    big = bytes(range(256)) * (4 << 12)  # 4 MiB
    stream = frame(big) + frame(b"next") + frame(b"")
    buf, got = FrameBuffer(), []
    step = 1 << 16
    for i in range(0, len(stream), step):
        got += buf.feed(stream[i:i + step])
    assert got == [big, b"next", b""]
    assert buf.feed(frame(b"again")) == [b"again"]  # nothing left behind


async def test_a_child_answers_in_order_and_its_end_is_reported_once() -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()
    ends: list[str] = []
    ended = asyncio.Event()

    def on_end(why: str) -> None:
        ends.append(why)
        ended.set()

    pipe = ChildPipe([sys.executable, "-c", ECHO], got.put_nowait, on_end)
    try:
        assert await asyncio.wait_for(got.get(), 60) == b"ready"
        big = bytes(range(256)) * 8192  # 2 MiB: more than a pipe holds, written as the child reads
        for p in (b"abc", big, b""):
            pipe.send(p)
        assert [await asyncio.wait_for(got.get(), 60) for _ in range(3)] == [b"cba", big[::-1], b""]
        pipe.kill()
        await asyncio.wait_for(ended.wait(), 30)
        assert not pipe.open and len(ends) == 1
        pipe.send(b"dropped")  # after the end: nothing, no second report
        assert len(ends) == 1
    finally:
        pipe.close()
        assert await pipe.wait(30) is not None
