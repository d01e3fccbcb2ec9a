"""The fields of a Yjs v1 update, located by byte span, for structure-aware mutation.

``fields(update)`` walks the update as Yjs encodes it (struct groups per client: GC, Skip and Item
structs with their origins, parent and content; then the delete set) and returns every field it
passed with its byte span and kind, stopping quietly where the bytes stop making sense (a mutated
update is rarely well formed to the end). ``mutate_field`` rewrites one field with a value that
is plausible for its kind (an existing client or clock, one past it, zero, a huge number, another
content kind), which reaches deeper into yrs than flipping bits does.
"""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

from collab.lib0 import Decoder

ANY_TAGS = {127, 126, 125, 124, 123, 122, 121, 120, 119, 118, 117, 116}


def var_uint(n: int) -> bytes:
    """LEB128 of any ``n >= 0`` (yrs reads 64-bit varints, beyond lib0's 53 bits)."""
    n = max(0, n) % 2**64
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass(frozen=True)
class Field:
    start: int
    end: int
    kind: str   # count | client | clock | info | parent_info | len | type_ref | struct


class _Walk(Decoder):
    def __init__(self, buf: bytes) -> None:
        super().__init__(buf)
        self.out: list[Field] = []

    def uint(self, kind: str) -> int:
        start = self.pos
        n = self.var_uint()
        self.out.append(Field(start, self.pos, kind))
        return n

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise ValueError("end")
        self.pos += 1
        return self.buf[self.pos - 1]

    def skip_bytes(self) -> None:
        n = self.uint("len")
        if self.pos + n > len(self.buf):
            raise ValueError("end")
        self.pos += n

    def any(self, depth: int = 0) -> None:
        if depth > 50:
            raise ValueError("deep")
        tag = self.byte()
        if tag == 125:  # signed varint
            while self.byte() & 0x80:
                pass
        elif tag == 124:
            self.pos += 4
        elif tag in (123, 122):
            self.pos += 8
        elif tag in (119, 116):
            self.skip_bytes()
        elif tag == 118:
            for _ in range(self.uint("count")):
                self.skip_bytes()
                self.any(depth + 1)
        elif tag == 117:
            for _ in range(self.uint("count")):
                self.any(depth + 1)
        elif tag not in ANY_TAGS:
            raise ValueError("tag")

    def content(self, ref: int) -> None:
        if ref == 1:
            self.uint("len")
        elif ref == 2:
            for _ in range(self.uint("count")):
                self.skip_bytes()
        elif ref in (3, 4, 5):
            self.skip_bytes()
        elif ref == 6:
            self.skip_bytes()
            self.skip_bytes()
        elif ref == 7:
            if self.uint("type_ref") in (3, 5):
                self.skip_bytes()
        elif ref == 8:
            for _ in range(self.uint("count")):
                self.any()
        elif ref == 9:
            self.skip_bytes()
            self.any()
        else:
            raise ValueError("content")

    def update(self) -> None:
        for _ in range(self.uint("count")):
            n = self.uint("count")
            self.uint("client")
            self.uint("clock")
            for _ in range(n):
                start = self.pos
                info = self.byte()
                self.out.append(Field(start, self.pos, "info"))
                ref = info & 0x1F
                if ref in (0, 10):
                    self.uint("len")
                else:
                    if info & 0x80:
                        self.uint("client")
                        self.uint("clock")
                    if info & 0x40:
                        self.uint("client")
                        self.uint("clock")
                    if not info & 0xC0:
                        if self.uint("parent_info") == 1:
                            self.skip_bytes()
                        else:
                            self.uint("client")
                            self.uint("clock")
                        if info & 0x20:
                            self.skip_bytes()
                    self.content(ref)
                self.out.append(Field(start, self.pos, "struct"))
        for _ in range(self.uint("count")):
            self.uint("client")
            for _ in range(self.uint("count")):
                self.uint("clock")
                self.uint("len")


def fields(update: bytes) -> list[Field]:
    w = _Walk(update)
    with contextlib.suppress(ValueError, IndexError):  # a malformed tail: the fields before it still count
        w.update()
    return w.out


def _value(rng: random.Random, update: bytes, fs: list[Field], f: Field) -> bytes:
    same = [f2 for f2 in fs if f2.kind == f.kind and f2 != f]
    if f.kind == "info":
        b = update[f.start]
        choice = rng.randrange(4)
        if choice == 0:
            return bytes(((b & 0xE0) | rng.randrange(12),))
        if choice == 1:
            return bytes((b ^ rng.choice((0x80, 0x40, 0x20)),))
        if choice == 2:
            return bytes((rng.randrange(256),))
        return bytes((b & 0xE0 | 10,))
    try:
        cur = Decoder(update, f.start).var_uint()
    except ValueError:
        cur = 0
    choice = rng.randrange(6)
    if choice == 0 and same:
        o = rng.choice(same)
        return update[o.start:o.end]
    if choice == 1:
        return var_uint(max(0, cur + rng.choice((-1, 1, 2))))
    if choice == 2:
        return var_uint(rng.choice((0, 1, 2**31, 2**32 - 1, 2**32, 2**53 - 1, 2**63, 2**64 - 1)))
    if choice == 3 and f.kind == "type_ref":
        return var_uint(rng.randrange(9))
    if choice == 4 and f.kind == "parent_info":
        return var_uint(1 - cur if cur in (0, 1) else 0)
    return var_uint(rng.randrange(max(2, cur * 2 + 2)))


def mutate_field(rng: random.Random, update: bytes) -> bytes:
    """One structure-aware change: a field rewritten, a struct duplicated, dropped or moved."""
    fs = fields(update)
    if not fs:
        return update
    f = rng.choice(fs)
    if f.kind == "struct":
        body = update[f.start:f.end]
        choice = rng.randrange(3)
        if choice == 0:
            return update[:f.end] + body + update[f.end:]
        if choice == 1:
            return update[:f.start] + update[f.end:]
        others = [g for g in fs if g.kind == "struct" and g.end <= f.start]
        if others:
            g = rng.choice(others)
            return update[:g.start] + body + update[g.start:f.start] + update[f.end:]
        return update
    return update[:f.start] + _value(rng, update, fs, f) + update[f.end:]


def deep_any(depth: int, container: str = "array") -> bytes:
    """One ContentAny item in root type "a" holding ``depth`` nested one-element arrays (or objects
    with key "k") around a null: yrs decodes Any recursively, and a deep enough one overflows the
    stack (SIGSEGV; pycrdt 0.14.13 on an 8 MiB main-thread stack: about 26,000 levels, 52 KB)."""
    level = b"\x75\x01" if container == "array" else b"\x76\x01\x01k"
    return b"\x01\x01\x01\x00\x08\x01\x01a\x01" + level * depth + b"\x7e\x00"
