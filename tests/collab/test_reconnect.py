"""collab.reconnect: the backoff, the reconnect loop and the coalescing writer (real sockets)."""
from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from collab.reconnect import (
    MAX_MESSAGE_BYTES,
    Next,
    Reconnecting,
    Writer,
    backoff_delay,
    utf8_size,
)


@given(st.integers(0, 100), st.floats(0.001, 10), st.floats(0.001, 60))
def test_backoff_is_jittered_exponential_and_capped(attempt: int, base: float, cap: float) -> None:
    full = min(cap, base * 2 ** min(attempt, 30))
    d = backoff_delay(attempt, base, cap)
    assert full / 2 <= d <= full


def test_backoff_doubles_until_the_cap() -> None:
    assert [round(min(5.0, 0.1 * 2**a), 3) for a in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    for a in range(8):
        assert backoff_delay(a, 0.1, 5.0) <= 5.0


class Scripted(Reconnecting):
    """Attempts that follow a script; records the attempt numbers the backoff was asked for."""

    def __init__(self, script: list[Next], url: str | None = None, backoff_max: float = 0.02) -> None:
        super().__init__(backoff_base=0.001, backoff_max=backoff_max)
        self.script, self.url = list(script), url
        self.attempts = 0
        self.asked: list[int] = []

    def _backoff(self, attempt: int) -> float:
        self.asked.append(attempt)
        return super()._backoff(attempt)

    async def _attempt(self) -> Next:
        self.attempts += 1
        if self.url is not None:  # a real connection that comes up, then is lost
            async with connect(self.url) as ws:
                self._mark_up()
                await ws.recv()  # the server says hello, then closes
                await ws.wait_closed()
        return self.script.pop(0)


async def test_loop_follows_now_later_and_stop() -> None:
    r = Scripted([Next.NOW, Next.LATER, Next.LATER, Next.STOP])
    await asyncio.wait_for(r._run_loop(), 10)
    assert r.attempts == 4 and r.reconnects == 2 and r.asked == [0, 1]  # NOW does not back off


async def test_closing_stops_the_loop() -> None:
    r = Scripted([Next.LATER] * 3)
    r._closing = True
    await asyncio.wait_for(r._run_loop(), 10)
    assert r.attempts == 0


async def test_a_connection_that_stayed_up_starts_the_backoff_over() -> None:
    async def hello(ws: ServerConnection) -> None:
        await ws.send("hello")  # then the handler returns: the server closes the connection

    async with serve(hello, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        up = Scripted([Next.LATER, Next.LATER, Next.STOP], url=f"ws://127.0.0.1:{port}", backoff_max=0.0)
        # (up for longer than backoff_max 0: a real round trip takes time)
        await asyncio.wait_for(up._run_loop(), 10)
    down = Scripted([Next.LATER, Next.LATER, Next.STOP], backoff_max=0.0)  # never came up
    await asyncio.wait_for(down._run_loop(), 10)
    assert up.asked == [0, 0] and down.asked == [0, 1]


async def test_writer_coalesces_one_turn_into_one_message_up_to_the_cap() -> None:
    got: list[str | bytes] = []
    first_in, all_in = asyncio.Event(), asyncio.Event()

    async def sink(ws: ServerConnection) -> None:
        async for m in ws:
            got.append(m)
            first_in.set()
            if len(got) >= 3:
                all_in.set()

    async with serve(sink, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            w = Writer(ws)
            w.send("a")
            w.send("b")
            await asyncio.wait_for(first_in.wait(), 10)
            assert got == ["a\nb"]
            half = "é" * (MAX_MESSAGE_BYTES // 4)  # 2 bytes a char: half the cap in UTF-8
            assert utf8_size(half) == MAX_MESSAGE_BYTES // 2
            w.send(half)
            w.send(half)  # would pass the cap in bytes (not in chars): a message of its own
            await asyncio.wait_for(all_in.wait(), 10)
            assert got[1:] == [half, half]
            w.stop()

