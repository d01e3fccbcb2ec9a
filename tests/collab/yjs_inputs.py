"""Yjs inputs for the sandbox tests: valid edits and the crashing/panicking regression data
in tests/data/yjs_crashes/ (``a_*``: found by mutating valid pycrdt updates; see
docs/reliability.md, "Yjs engine isolation")."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from pycrdt import Doc, Text

from collab.lib0 import var_uint

DATA = Path(__file__).resolve().parent.parent / "data" / "yjs_crashes"


@dataclass(frozen=True)
class Crasher:
    name: str
    base: bytes  # the document state it needs first (b"": none)
    update: bytes
    verdict: str


def crashers() -> list[Crasher]:
    out = []
    for path in sorted(DATA.glob("a_*.json")):
        d = json.loads(path.read_text())
        out.append(Crasher(path.stem, base64.b64decode(d["base"]), base64.b64decode(d["update"]), d["verdict"]))
    return out


def edits(*texts: str, client: int = 7) -> list[bytes]:
    """One update per appended text, from one pycrdt document."""
    doc: Doc = Doc(client_id=client)
    text = doc.get("text", type=Text)
    out: list[bytes] = []
    for t in texts:
        before = doc.get_state()
        text += t
        out.append(doc.get_update(before))
    return out


def cpu_bomb(n: int = 100_000) -> tuple[bytes, bytes]:
    """A document of one ``n``-character insert, and a valid update of ``n / 2`` one-character
    deletions of it: each splits the block, and yrs takes quadratic time (~0.6 s on the test
    machine for n = 100 000, a 190 KB update; docs/reliability.md)."""
    doc: Doc = Doc(client_id=5)
    doc.get("text", type=Text).insert(0, "x" * n)
    k = n // 2
    deletes = b"".join(var_uint(2 * i) + var_uint(1) for i in range(k))
    return doc.get_update(), b"\x00" + var_uint(1) + var_uint(5) + var_uint(k) + deletes
