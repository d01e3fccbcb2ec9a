"""A small y-websocket client for tests: a pycrdt Doc synced over a raw WebSocket.

It speaks the protocol the way y-websocket's WebsocketProvider does (sync step 1 on connect,
answer the relay's step 1 with step 2, send local updates, awareness with clocks, honour
query-awareness) and records everything it receives. It deliberately does not use
``relay.endpoints.yjs_protocol``: the encodings here are written from y-protocols.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import websockets
from pycrdt import Doc, Text, TransactionEvent

from collab.lib0 import var_bytes as varbytes
from collab.lib0 import var_uint as varuint

REMOTE = "remote"


def read_varuint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7


def read_varbytes(buf: bytes, i: int) -> tuple[bytes, int]:
    n, i = read_varuint(buf, i)
    return buf[i:i + n], i + n


def msg_step1(sv: bytes) -> bytes:
    return b"\x00\x00" + varbytes(sv)


def msg_step2(update: bytes) -> bytes:
    return b"\x00\x01" + varbytes(update)


def msg_update(update: bytes) -> bytes:
    return b"\x00\x02" + varbytes(update)


def awareness_payload(entries: list[tuple[int, int, Any]]) -> bytes:
    """entries: (client id, clock, state or None); states are sent as JSON text."""
    out = varuint(len(entries))
    for client, clock, state in entries:
        out += varuint(client) + varuint(clock) + varbytes(json.dumps(state, separators=(",", ":")).encode())
    return out


def msg_awareness(entries: list[tuple[int, int, Any]]) -> bytes:
    return b"\x01" + varbytes(awareness_payload(entries))


def decode_awareness(payload: bytes) -> list[tuple[int, int, Any]]:
    n, i = read_varuint(payload, 0)
    out = []
    for _ in range(n):
        client, i = read_varuint(payload, i)
        clock, i = read_varuint(payload, i)
        text, i = read_varbytes(payload, i)
        out.append((client, clock, json.loads(text.decode())))
    return out


class YClient:
    """``await YClient.connect(base, name, token=...)``; ``doc`` is the local Yjs document."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.doc = Doc()
        self.text = self.doc.get("text", type=Text)
        self.received: list[tuple[str, Any]] = []   # ("step1"|"step2"|"update"|"awareness"|"denied"|"query", payload)
        self.denied: list[str] = []
        self.awareness: dict[int, tuple[int, Any]] = {}   # client -> (clock, state or None)
        self.clock = 0
        self.synced = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self._cond = asyncio.Condition()
        self._sub = self.doc.observe(self._on_local)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, base: str, name: str, token: str | None = None, *, hello: bool = True,
                      state: dict[str, Any] | None = None, initial: bytes | None = None) -> YClient:
        """``initial``: content the client already has (a client that reconnects)."""
        url = f"{base}/{name}" + (f"?token={token}" if token is not None else "")
        ws = await websockets.connect(url, max_size=None)
        client = cls(ws)
        if initial is not None:
            client._apply(initial)
        if hello:  # what WebsocketProvider sends on open
            await client.send(msg_step1(client.doc.get_state()))
            if state is not None:
                await client.set_state(state)
        return client

    @property
    def client_id(self) -> int:
        return self.doc.client_id

    async def send(self, data: bytes | str) -> None:
        """Send (quietly nothing once the relay closed the connection: see ``closed``)."""
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(data)

    def _on_local(self, event: TransactionEvent) -> None:
        if event.transaction.origin() == hash(REMOTE) or event.update == b"\x00\x00":
            return
        asyncio.get_running_loop().create_task(self._send_quietly(msg_update(event.update)))

    async def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(data)

    def _apply(self, update: bytes) -> None:
        with self.doc.transaction(origin=REMOTE):
            self.doc.apply_update(update)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                assert isinstance(msg, bytes), msg
                await self._handle(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code, self.ws.close_reason or ""))
            async with self._cond:
                self._cond.notify_all()

    async def _handle(self, msg: bytes) -> None:
        t, i = read_varuint(msg, 0)
        if t == 0:
            sub, i = read_varuint(msg, i)
            payload, _ = read_varbytes(msg, i)
            if sub == 0:
                self.received.append(("step1", payload))
                await self.send(msg_step2(self.doc.get_update(payload)))
            else:
                self.received.append(("step2" if sub == 1 else "update", payload))
                self._apply(payload)
                if sub == 1 and not self.synced.done():
                    self.synced.set_result(None)
        elif t == 1:
            payload, _ = read_varbytes(msg, i)
            entries = decode_awareness(payload)
            self.received.append(("awareness", entries))
            for client, clock, state in entries:
                curr = self.awareness.get(client, (0, None))[0]
                if curr < clock or (curr == clock and state is None):
                    self.awareness[client] = (clock, state)
        elif t == 2:
            sub, i = read_varuint(msg, i)
            reason, _ = read_varbytes(msg, i)
            self.received.append(("denied", reason.decode()))
            self.denied.append(reason.decode())
        elif t == 3:
            self.received.append(("query", None))
        async with self._cond:
            self._cond.notify_all()

    async def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        async def check() -> None:
            async with self._cond:
                while not pred():
                    if self.closed.done():
                        raise ConnectionError(f"closed {self.closed.result()} while waiting")
                    await self._cond.wait()

        await asyncio.wait_for(check(), timeout)

    async def wait_text(self, value: str, timeout: float = 10.0) -> None:
        await self.wait(lambda: str(self.text) == value, timeout)

    def states(self) -> dict[int, Any]:
        """Present awareness states (not removed)."""
        return {c: s for c, (_, s) in self.awareness.items() if s is not None}

    async def set_state(self, state: dict[str, Any] | None) -> None:
        self.clock += 1
        await self.send(msg_awareness([(self.client_id, self.clock, state)]))

    def edit(self, text: str, index: int | None = None) -> None:
        self.text.insert(len(self.text) if index is None else index, text)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        self.doc.unobserve(self._sub)
