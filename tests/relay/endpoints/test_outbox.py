"""relay.endpoints.outbox: one outbox for text and binary messages, on real uvicorn sockets."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed

from relay.endpoints.connection import receive_pump
from relay.endpoints.outbox import CLOSE_SLOW, Outbox
from relay.core.wsframe import SharedText, binary_frame
from relay.endpoints.wsdirect import GuardedProtocol
from tests.relay.endpoints.asgi_ws import ws_server
from tests.stalled import Stalled
from tests.wait import eventually

Fill = Callable[[Outbox], None]


class _Quiet:
    """A connection that only writes (what the test queues at accept) and ignores input."""

    def __init__(self, out: Outbox) -> None:
        self.out = out

    async def handle_message(self, message: str | bytes) -> None:
        pass

    def closed(self) -> None:
        self.out.close(1000, "closed")


async def _received(fill: Fill, max_frames: int = 100, **kw: object) -> tuple[list[str | bytes], int | None, str]:
    """Serve one connection whose outbox ``fill`` loads in one loop turn; the client's
    messages, close code and reason."""
    outs: list[Outbox] = []

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        out = Outbox(websocket, max_frames, **kw)  # type: ignore[arg-type]
        outs.append(out)
        fill(out)
        conn = _Quiet(out)
        try:
            await receive_pump(websocket, conn, "test")
        finally:
            conn.closed()
            await out.wait_closed()

    async with ws_server(handler) as url, websockets.connect(url, max_size=None, compression=None) as ws:
        return await _read_all(ws), ws.close_code, ws.close_reason or ""


async def _read_all(ws: websockets.ClientConnection) -> list[str | bytes]:
    """Every message until the connection closes."""
    got: list[str | bytes] = []
    try:
        while True:
            got.append(await ws.recv())
    except ConnectionClosed:
        return got


async def test_text_frames_of_one_turn_go_out_as_one_message() -> None:
    def fill(out: Outbox) -> None:
        for f in ("a", "b", "c"):
            assert out.put(f)
        out.close(1001, "bye")  # a drain: what is queued still goes out

    got, code, reason = await _received(fill)
    assert got == ["a\nb\nc"] and (code, reason) == (1001, "bye")


async def test_binary_messages_keep_their_order_and_are_never_joined() -> None:
    def fill(out: Outbox) -> None:
        for m in ("t1", "t2", b"\x00b1", b"b2", "t3"):
            if isinstance(m, str):
                out.put(m)
            else:
                out.put_bytes(m)
        out.close(1001, "")

    got, code, _ = await _received(fill)
    assert got == ["t1\nt2", b"\x00b1", b"b2", "t3"] and code == 1001


@pytest.mark.parametrize("flush", [(), (1000, 1001)])
async def test_close_drops_the_backlog_unless_its_code_flushes(flush: tuple[int, ...]) -> None:
    def fill(out: Outbox) -> None:
        out.put("queued")
        out.close(1000, "done")

    got, code, reason = await _received(fill, flush_codes=flush)
    assert (code, reason) == (1000, "done")
    assert got == (["queued"] if flush else [])


async def test_a_full_outbox_cuts_the_slow_consumer_with_4008() -> None:
    results: list[bool] = []

    def fill(out: Outbox) -> None:
        results.extend(out.put(f"f{i}") for i in range(5))

    got, code, reason = await _received(fill, max_frames=4, slow_reason="slow: resume")
    assert results == [True, True, True, True, False]
    assert (code, reason) == (CLOSE_SLOW, "slow: resume") and got == []


async def test_coalescing_stops_at_the_size_cap() -> None:
    big = "x" * (100 << 10)

    def fill(out: Outbox) -> None:
        for _ in range(4):
            out.put(big)
        out.close(1001, "")

    got, _, _ = await _received(fill)
    assert [len(m) for m in got] == [3 * len(big) + 2, len(big)]  # 256 KiB reached after the third


async def test_shared_messages_go_straight_to_the_socket_when_nothing_is_queued() -> None:
    shared = SharedText(["s1", "s2"])
    direct: list[bool] = []
    sent: list[int] = []

    def fill(out: Outbox) -> None:
        direct.append(out.direct is not None)
        out.put_shared(shared)                          # nothing queued: written at once
        out.put_framed(b"bin", binary_frame(b"bin"))    # likewise
        sent.append(out.sent_messages)
        out.put("after")
        out.put_shared(shared)                          # queued behind "after": keeps the order
        out.close(1001, "")

    got, _, _ = await _received(fill)
    assert direct == [True] and sent == [2]
    assert got == ["s1\ns2", b"bin", "after\ns1\ns2"]


async def test_an_idle_outbox_holds_no_writer_task_nor_queue_of_its_own() -> None:
    """The writer runs while something is queued; an idle connection keeps neither it nor a deque."""
    seen: list[tuple[bool, bool]] = []
    done: list[Outbox] = []

    def fill(out: Outbox) -> None:
        seen.append((out._task is None, len(out.frames) == 0))   # fresh: nothing
        out.put("one")
        seen.append((out._task is not None, len(out.frames) == 1))  # a put starts the writer
        done.append(out)

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        out = Outbox(websocket, 100)  # type: ignore[arg-type]
        fill(out)
        task = out._task
        assert task is not None
        await task  # the writer sends "one" and ends: the queue is empty
        seen.append((out._task is None, out.frames is Outbox(websocket, 100).frames))  # type: ignore[arg-type]
        out.put("two")  # starts another writer
        out.close(1001, "")
        await out.wait_closed()
        assert out.finished.done()

    async with ws_server(handler) as url, websockets.connect(url, max_size=None, compression=None) as ws:
        got = await _read_all(ws)
    assert seen == [(True, True), (True, True), (True, True)]
    assert got == ["one", "two"]


async def test_put_wait_waits_for_room_then_aclose_flushes() -> None:
    """put_wait pauses at half the bound until the writer made room (never cut as slow);
    aclose(1001) sends what is queued, then the close."""
    done = asyncio.Event()

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        out = Outbox(websocket, 4)  # type: ignore[arg-type]
        for i in range(10):
            await out.put_wait(f"w{i}")
        assert not out.closed
        await out.aclose(1001, "end")
        done.set()

    async with ws_server(handler) as url, websockets.connect(url, compression=None) as ws:
        got = await _read_all(ws)
        await asyncio.wait_for(done.wait(), 10)
        assert "\n".join(str(m) for m in got).split("\n") == [f"w{i}" for i in range(10)]
        assert ws.close_code == 1001


# -- a peer that stops reading: bounded in bytes and in time ------------------------------------
CHUNK = 64 << 10


async def _stalled_outbox(fill: Callable[[Outbox], Any], **kw: Any) -> tuple[Outbox, bool, float]:
    """Serve one connection (GuardedProtocol, kernel send buffer capped at 256 KiB) to a client
    that reads nothing; ``fill`` runs at accept (it may wait). The outbox, whether the client
    saw a reset, and the seconds from the end of ``fill`` until it saw the connection end."""
    outs: list[Outbox] = []
    filled = asyncio.Event()

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        out = Outbox(websocket, 10_000, **kw)  # type: ignore[arg-type]
        outs.append(out)
        result = fill(out)
        if asyncio.iscoroutine(result):
            await result
        filled.set()
        conn = _Quiet(out)
        try:
            await receive_pump(websocket, conn, "test")
        finally:
            conn.closed()
            await out.wait_closed()

    async with ws_server(handler, ws=GuardedProtocol.bounded(256 << 10)) as url:
        client = await Stalled.connect(url)
        try:
            await asyncio.wait_for(filled.wait(), 10)
            took = await eventually(client.ended, 10, "the relay ending the stalled connection")
            return outs[0], client.reset(), took
        finally:
            client.close()


async def _until_unwritable(out: Outbox) -> None:
    """Queue 64 KiB messages until the socket is paused for back-pressure (the peer reads nothing)."""
    assert out.sock is not None
    for _ in range(200):
        out.put_bytes(b"x" * CHUNK)
        await asyncio.sleep(0)  # the writer sends (a real turn of the loop, no wall time)
        if not out.sock.writable():
            return
    raise AssertionError("the socket never became unwritable")


async def test_a_socket_that_takes_no_bytes_is_aborted_after_the_deadline() -> None:
    out, reset, took = await _stalled_outbox(_until_unwritable, max_bytes=64 << 20, unwritable_timeout=0.3)
    assert out.aborted and reset  # a reset: no close frame it could not take
    assert 0.2 <= took < 2.0, took
    assert out.held == 0 and not out.frames  # what it held is dropped


async def test_passing_the_byte_cap_with_an_unwritable_socket_aborts_at_once() -> None:
    async def fill(out: Outbox) -> None:
        await _until_unwritable(out)
        while not out.closed:  # queue until the cap (queue plus the socket's buffer) is passed
            out.put_bytes(b"y" * CHUNK)
        assert out.aborted and out.held == 0

    _, reset, took = await _stalled_outbox(fill, max_bytes=2 << 20, unwritable_timeout=60)
    assert reset and took < 1.0  # long before the 60 s deadline


async def test_passing_the_byte_cap_while_writable_closes_with_4008() -> None:
    def fill(out: Outbox) -> None:
        for i in range(10):
            out.put(f"{i:04d}" + "z" * 1000)  # the 4th passes the 3 KB cap within one loop turn

    got, code, _ = await _received(fill, max_bytes=3000)
    assert code == CLOSE_SLOW and got == []  # the backlog is dropped, the close frame goes out
