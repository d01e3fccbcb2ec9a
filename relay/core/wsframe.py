"""Server-side WebSocket frames built once and shared: a message many connections get unchanged
is framed (RFC 6455, unmasked) at most once. The fan-out builds them; the endpoints'
:class:`relay.endpoints.wsdirect.DirectWriter` writes them straight to sockets when safe."""
from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2


def frame(payload: bytes, opcode: int) -> bytes:
    """One unmasked, final frame (RFC 6455 §5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def binary_frame(payload: bytes) -> bytes:
    return frame(payload, OP_BINARY)


class SharedText:
    """A text message several connections get unchanged (one feed's batch of record frames):
    joined and framed at most once, on first use."""

    __slots__ = ("_framed", "_text", "parts")

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts
        self._text: str | None = None
        self._framed: bytes | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "\n".join(self.parts)
        return self._text

    @property
    def framed(self) -> bytes:
        if self._framed is None:
            self._framed = frame(self.text.encode(), OP_TEXT)
        return self._framed
