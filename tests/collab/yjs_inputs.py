"""Yjs inputs for the sandbox tests: valid edits and the crashing/panicking regression data
in tests/data/yjs_crashes/ (``a_*``: found by mutating valid pycrdt updates; see
docs/reliability.md, "Yjs engine isolation")."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from pycrdt import Doc, Text, merge_updates

from collab.lib0 import var_uint

DATA = Path(__file__).resolve().parent.parent / "data" / "yjs_crashes"


@dataclass(frozen=True)
class Crasher:
    name: str
    prefix: tuple[bytes, ...]  # valid updates it needs applied first (a sequence)
    update: bytes
    verdict: str  # "panic" | "segfault"

    @property
    def base(self) -> bytes:
        """The prefix as one update (b"": none)."""
        return merge_updates(*self.prefix) if len(self.prefix) > 1 else (self.prefix[0] if self.prefix else b"")


def crashers(kinds: tuple[str, ...] = ("panic", "segfault")) -> list[Crasher]:
    """Every regression input: ``a_*.json`` (this sandbox's own search) and the mutation fuzzer's
    findings (``*.bin`` single updates, ``seq-*/NN.bin`` sequences; see the README there)."""
    out = []
    for path in sorted(DATA.glob("a_*.json")):
        d = json.loads(path.read_text())
        base = base64.b64decode(d["base"])
        out.append(Crasher(path.stem, (base,) if base else (), base64.b64decode(d["update"]), d["verdict"]))
    manifest = json.loads((DATA / "manifest.json").read_text()) if (DATA / "manifest.json").exists() else {}
    for name, info in sorted(manifest.items()):
        path = DATA / name
        if path.is_dir():
            parts = [p.read_bytes() for p in sorted(path.glob("*.bin"))]
            out.append(Crasher(name, tuple(parts[:-1]), parts[-1], info["kind"]))
        elif path.exists():
            out.append(Crasher(name, (), path.read_bytes(), info["kind"]))
    return [c for c in out if c.verdict in kinds]


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
