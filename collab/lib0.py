"""lib0's binary encoding, the one codec of the project (Yjs updates, state vectors, y-protocols).

* ``var_uint``: unsigned LEB128, 7 bits a byte, low bits first. lib0 (JavaScript numbers) reads
  at most 53 bits, so the largest value is ``2**53 - 1`` (:data:`MAX_VAR_UINT`); a varuint is
  at most 8 bytes long (a 9th byte could only carry bits above 2**56).
* ``var_bytes``: a varuint byte length, then the bytes.
* ``var_string``: ``var_bytes`` of the UTF-8 encoding.

Encoding is a set of functions; decoding is a strict :class:`Decoder`: truncation, overlong
varuints, values over 53 bits and bad UTF-8 raise :attr:`Decoder.error` (``ValueError`` here;
a protocol subclasses the decoder to raise its own error, e.g.
``relay.endpoints.yjs_protocol.Reader``).
"""
from __future__ import annotations

from typing import ClassVar

MAX_VAR_UINT = 2**53 - 1     # lib0 reads at most 53 bits
_MAX_SHIFT = 49              # shift of the 8th byte: a 9th would only carry bits above 2**56


def var_uint(n: int) -> bytes:
    """Encode ``0 <= n <= 2**53 - 1``; ValueError otherwise."""
    if n < 0 or n > MAX_VAR_UINT:
        raise ValueError("varuint out of range")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def var_bytes(data: bytes) -> bytes:
    return var_uint(len(data)) + data


def var_string(text: str) -> bytes:
    return var_bytes(text.encode("utf-8"))


class Decoder:
    """A strict lib0 decoder over ``buf`` from ``pos``."""

    __slots__ = ("buf", "pos")
    error: ClassVar[type[Exception]] = ValueError

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf, self.pos = buf, pos

    def at_end(self) -> bool:
        return self.pos >= len(self.buf)

    def var_uint(self) -> int:
        buf, pos = self.buf, self.pos
        n = shift = 0
        while True:
            if pos >= len(buf):
                self.pos = pos
                raise self.error("truncated varuint")
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > _MAX_SHIFT:
                self.pos = pos
                raise self.error("varuint longer than 53 bits")
        self.pos = pos
        if n > MAX_VAR_UINT:
            raise self.error("varuint larger than 2**53 - 1")
        return n

    def var_bytes(self) -> bytes:
        n = self.var_uint()
        end = self.pos + n
        if end > len(self.buf):
            raise self.error(f"truncated: {n} bytes announced, {len(self.buf) - self.pos} left")
        data = self.buf[self.pos:end]
        self.pos = end
        return data

    def var_string(self) -> str:
        try:
            return self.var_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error("string is not UTF-8") from exc

    def expect_end(self, what: str) -> None:
        if not self.at_end():
            raise self.error(f"{len(self.buf) - self.pos} trailing bytes after {what}")


def read_state_vector(sv: bytes, decoder: type[Decoder] = Decoder) -> dict[int, int]:
    """A Yjs state vector: varuint n, then n x (varuint client, varuint clock); nothing after.

    Every ``doc.update`` the relay validates reads one, so this is a tight loop over the buffer
    (one call per varuint, the one-byte case first) rather than method calls on a Decoder; the
    rules are the Decoder's, and so are the errors (``decoder.error``)."""
    end = len(sv)
    count, pos = _uint(sv, 0, decoder)
    out: dict[int, int] = {}
    for _ in range(count):
        client, pos = _uint(sv, pos, decoder)
        out[client], pos = _uint(sv, pos, decoder)
    if pos != end:
        raise decoder.error(f"{end - pos} trailing bytes after a state vector")
    return out


def _uint(buf: bytes, pos: int, decoder: type[Decoder]) -> tuple[int, int]:
    """One varuint at ``pos``: (value, next pos), by the rules of :meth:`Decoder.var_uint`."""
    try:
        b = buf[pos]
        if b < 0x80:
            return b, pos + 1
        n, shift = b & 0x7F, 7
        while True:
            pos += 1
            b = buf[pos]
            n |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > _MAX_SHIFT:
                raise decoder.error("varuint longer than 53 bits")
    except IndexError:
        raise decoder.error("truncated varuint") from None
    if n > MAX_VAR_UINT:
        raise decoder.error("varuint larger than 2**53 - 1")
    return n, pos + 1


__all__ = ["MAX_VAR_UINT", "Decoder", "read_state_vector", "var_bytes", "var_string", "var_uint"]
