"""A WebSocket client that stops reading: a raw TCP socket with a small receive buffer that
completes the handshake (websockets' sans-I/O client protocol), exchanges a few messages, and
then reads nothing more. The relay sees exactly what a stalled peer looks like: a socket whose
window closes and whose bytes pile up on the relay's side.

``ended()`` tells from the client's side whether the relay ended the connection (a reset: TCP
state CLOSE; or a close/FIN: CLOSE_WAIT), without reading what is queued.
"""
from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8  # linux/tcp_states.h


class Stalled:
    """One connection; ``recv`` reads messages until ``stop_reading`` (then nothing is read)."""

    def __init__(self, sock: socket.socket, proto: ClientProtocol) -> None:
        self.sock, self.proto = sock, proto
        self._messages: list[str | bytes] = []

    @classmethod
    async def connect(cls, url: str, rcvbuf: int = 4096) -> Stalled:
        """``url`` is ``ws://host:port/path``; ``rcvbuf`` is set before connecting, so the TCP
        window the client offers stays that small."""
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (parts.hostname or "127.0.0.1", parts.port or 80))
        proto = ClientProtocol(parse_uri(url), max_size=None)
        self = cls(sock, proto)
        proto.send_request(proto.connect())
        await self._flush()
        while not any(isinstance(e, Response) for e in await self._pump()):
            pass
        if proto.handshake_exc is not None:
            raise proto.handshake_exc
        return self

    async def _flush(self) -> None:
        data = b"".join(self.proto.data_to_send())
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _pump(self) -> list[Any]:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        self.proto.receive_data(data) if data else self.proto.receive_eof()
        events = self.proto.events_received()
        for e in events:
            if isinstance(e, Frame) and e.opcode in (Opcode.TEXT, Opcode.BINARY):
                self._messages.append(e.data.decode() if e.opcode is Opcode.TEXT else bytes(e.data))
        if not data:
            raise ConnectionError("the relay closed the connection during setup")
        return events

    async def recv(self, timeout: float = 10.0) -> str | bytes:
        """The next message (only while setting up: afterwards the client reads nothing)."""
        async with asyncio.timeout(timeout):
            while not self._messages:
                await self._pump()
        return self._messages.pop(0)

    async def recv_frame(self, t: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next native frame of type ``t`` (frames of other types are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv()
                for part in (msg if isinstance(msg, str) else msg.decode()).split("\n"):
                    frame = json.loads(part)
                    if frame.get("t") == t:
                        return frame  # type: ignore[no-any-return]

    async def send(self, msg: dict[str, Any] | str | bytes) -> None:
        if isinstance(msg, bytes):
            self.proto.send_binary(msg)
        else:
            self.proto.send_text((msg if isinstance(msg, str) else json.dumps(msg)).encode())
        await self._flush()

    def tcp_state(self) -> int:
        return struct.unpack("B", self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]

    def ended(self) -> bool:
        """The relay ended the connection (reset or FIN), whatever is still unread."""
        return self.tcp_state() in (TCP_CLOSE, TCP_CLOSE_WAIT)

    def reset(self) -> bool:
        """The relay reset the connection (an abort at its transport, not a close handshake)."""
        return self.tcp_state() == TCP_CLOSE

    def close(self) -> None:
        self.sock.close()
