"""A mutation fuzzer for pycrdt: finds Yjs updates that crash it, minimizes and saves them.

    python -m tests.fuzz.yjs_mutate [--seconds 300] [--seed 1] [--out tests/data/yjs_crashes]

It mutates valid updates (tests/fuzz/yjs_seeds.py) byte-wise, runs every operation of
tests/fuzz/pycrdt_child.py on each in a child process (PycrdtRunner), and for every new kind of
crash (operation, outcome, panic message or signal) shrinks the input while it still crashes the
same way, then saves it with its manifest entry (tests/data/yjs_crashes/README.md says the format).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pycrdt

from tests.fuzz.pycrdt_child import OPS
from tests.fuzz.pycrdt_runner import ROOT, Outcome, PycrdtRunner
from tests.fuzz.yjs_seeds import seeds
from tests.fuzz.yjs_struct import deep_any, mutate_field

PREFIXED = ("seq", "diff", "reuse")  # the operations that use the prefix
CRASH_DIR = ROOT / "tests" / "data" / "yjs_crashes"
INTERESTING = (0x00, 0x01, 0x02, 0x07, 0x08, 0x09, 0x0A, 0x7F, 0x80, 0x81, 0xFE, 0xFF)


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """Structure-aware field changes (half the time), then maybe byte-level ones."""
    if rng.random() < 0.5:
        for _ in range(rng.choice((1, 1, 2, 3))):
            data = mutate_field(rng, data)
        if rng.random() < 0.7:
            return data
    return mutate_bytes(rng, data, pool)


def mutate_bytes(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One to four byte-level mutations of ``data`` (``pool``: other updates to splice from)."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        n = len(b)
        how = rng.randrange(10)
        i = rng.randrange(n) if n else 0
        if n == 0 or how == 9:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif how == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif how == 1:
            b[i] = rng.choice(INTERESTING)
        elif how == 2:
            b[i] = rng.randrange(256)
        elif how == 3:
            b[i] = (b[i] + rng.choice((-2, -1, 1, 2))) % 256
        elif how == 4:  # grow a varint: a continuation bit on this byte, a new high byte after it
            b[i:i + 1] = bytes((b[i] | 0x80, rng.choice((0x01, 0x7F, 0x0F))))
        elif how == 5:
            del b[i:i + rng.randint(1, 8)]
        elif how == 6:
            j = rng.randrange(i, n + 1)
            b[j:j] = b[i:min(n, i + rng.randint(1, 16))]
        elif how == 7:
            src = rng.choice(pool)
            if src:
                k = rng.randrange(len(src))
                b[i:i + rng.randint(0, 8)] = src[k:k + rng.randint(1, 16)]
        else:
            del b[rng.randrange(n):]
    return bytes(b)


def signature(o: Outcome) -> str:
    """What makes two crashes the same: op, kind, and the panic's message without numbers."""
    return f"{o.op}|{o.kind}|{re.sub(r'[0-9]+', 'N', o.detail)[:120]}"


def same_crash(runner: PycrdtRunner, want: Outcome, u: bytes, prefix: list[bytes]) -> bool:
    got = runner.run(u, prefix, (want.op,))[-1]
    return got.kind == want.kind and (want.kind != "panic" or signature(got) == signature(want))


def minimize(runner: PycrdtRunner, want: Outcome, u: bytes, prefix: list[bytes],
             budget: float = 20.0) -> tuple[bytes, list[bytes]]:
    """Drop prefix updates, then chunks of bytes, while the input still crashes the same way."""
    end = time.monotonic() + budget
    if want.op not in PREFIXED:
        prefix = []
    else:
        i = 0
        while i < len(prefix) and time.monotonic() < end:
            trial = prefix[:i] + prefix[i + 1:]
            if same_crash(runner, want, u, trial):
                prefix = trial
            else:
                i += 1
    chunk = max(1, len(u) // 2)
    while chunk >= 1 and time.monotonic() < end:
        i, shrunk = 0, False
        while i < len(u) and time.monotonic() < end:
            trial = u[:i] + u[i + chunk:]
            if trial and same_crash(runner, want, trial, prefix):
                u, shrunk = trial, True
            else:
                i += chunk
        if not shrunk:
            chunk //= 2
    return u, prefix


@dataclass
class Finding:
    outcome: Outcome
    u: bytes
    prefix: list[bytes]
    all_ops: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        h = hashlib.sha256(b"".join(self.prefix) + b"|" + self.u).hexdigest()[:10]
        return f"{'seq-' if self.prefix else ''}{self.outcome.kind}-{self.outcome.op}-{h}"


def classify_all(runner: PycrdtRunner, u: bytes, prefix: list[bytes]) -> dict[str, str]:
    """Each operation on its own (a crash in one must not hide what the others do)."""
    out = {}
    for op in OPS:
        o = runner.run(u, prefix, (op,))[-1]
        out[op] = o.kind + (f" ({o.detail[:160]})" if o.kind in ("panic", "segfault", "exc") else "")
    return out


def _digest(parts: list[bytes]) -> str:
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()


def load(out: Path) -> dict[str, list[bytes]]:
    """Every saved input of ``out``'s manifest: path -> [*prefix, update]."""
    manifest_path = out / "manifest.json"
    if not manifest_path.exists():
        return {}
    res = {}
    for path in json.loads(manifest_path.read_text()):
        p = out / path
        res[path] = [q.read_bytes() for q in sorted(p.glob("*.bin"))] if path.endswith("/") else [p.read_bytes()]
    return res


def save(f: Finding, out: Path, note: str = "") -> str | None:
    """Write the input and its manifest entry; None when the same bytes are saved already."""
    out.mkdir(parents=True, exist_ok=True)
    if _digest([*f.prefix, f.u]) in {_digest(v) for v in load(out).values()}:
        return None
    if f.prefix:
        d = out / f.name
        d.mkdir(exist_ok=True)
        for i, p in enumerate([*f.prefix, f.u]):
            (d / f"{i:02d}.bin").write_bytes(p)
        path = f.name + "/"
    else:
        (out / f"{f.name}.bin").write_bytes(f.u)
        path = f.name + ".bin"
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[path] = {"kind": f.outcome.kind, "op": f.outcome.op, "detail": f.outcome.detail,
                      "pycrdt": pycrdt.__version__ if hasattr(pycrdt, "__version__") else "?",
                      "ops": f.all_ops, **({"note": note} if note else {})}
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def known_signatures(out: Path) -> Counter[str]:
    manifest_path = out / "manifest.json"
    if not manifest_path.exists():
        return Counter()
    m = json.loads(manifest_path.read_text())
    return Counter(signature(Outcome(e["op"], e["kind"], e["detail"])) for e in m.values())


def fuzz(seconds: float, seed: int, out: Path, per_signature: int = 2, log: bool = True) -> dict[str, int]:
    rng = random.Random(seed)
    corpus = seeds()
    pool = [u for s in corpus for u in s]
    seen = known_signatures(out)
    errors: set[str] = set()  # feedback: an input that draws a new error message joins the corpus
    stats: Counter[str] = Counter()
    end = time.monotonic() + seconds
    with PycrdtRunner(timeout=5.0) as runner:
        while time.monotonic() < end:
            s = rng.choice(corpus)
            i = rng.randrange(len(s))
            u, prefix = mutate(rng, s[i], pool), s[:i]
            stats["inputs"] += 1
            for o in runner.run(u, prefix):
                stats[o.kind] += 1
                if o.kind == "exc" and (sig := signature(o)) not in errors and len(corpus) < 5000:
                    errors.add(sig)
                    corpus.append([*prefix, u])
                if not o.crashed or seen[signature(o)] >= per_signature:
                    continue
                seen[signature(o)] += 1
                mu, mp = minimize(runner, o, u, prefix)
                f = first_crash(runner, mu, mp)  # named after the first operation that crashes
                if f is None:
                    continue
                path = save(f, out)
                if path is None:
                    continue
                stats["saved"] += 1
                if log:
                    print(f"[{stats['inputs']}] {o.kind} in {o.op}: {o.detail[:100]!r} -> {path} "
                          f"({len(u)} -> {len(mu)} bytes, prefix {len(prefix)} -> {len(mp)})", flush=True)
        stats["child_starts"] = runner.starts
    return dict(stats)


def first_crash(runner: PycrdtRunner, u: bytes, prefix: list[bytes]) -> Finding | None:
    """The input classified op by op; its Finding named after the first op that crashes."""
    ops = classify_all(runner, u, prefix)
    for op in OPS:
        kind, _, detail = ops[op].partition(" ")
        if kind in ("panic", "segfault", "hang"):
            return Finding(Outcome(op, kind, detail.strip("()")), u, prefix, ops)
    return None


def import_dirs(dirs: list[Path], out: Path) -> None:
    """Re-check the inputs saved in other directories and save the ones that still crash."""
    with PycrdtRunner(timeout=10.0) as runner:
        for d in dirs:
            for parts in load(d).values():
                f = first_crash(runner, parts[-1], parts[:-1])
                if f is not None and (path := save(f, out)):
                    print(f"imported {path}: {f.outcome.kind} in {f.outcome.op}")


def save_constructed(out: Path) -> None:
    """The hand-built inputs: Any nested deeper than yrs' recursive decoder survives."""
    with PycrdtRunner(timeout=30.0) as runner:
        for container in ("array", "object"):
            f = first_crash(runner, deep_any(32768, container), [])
            note = f"constructed: tests/fuzz/yjs_struct.py deep_any(32768, {container!r})"
            if f is not None and (path := save(f, out, note)):
                print(f"saved {path}: {f.outcome.kind} in {f.outcome.op}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-signature", type=int, default=2)
    ap.add_argument("--out", type=Path, default=CRASH_DIR)
    ap.add_argument("--import", dest="imports", type=Path, nargs="*", default=[],
                    help="re-check and save the crashes saved in these directories, then stop")
    ap.add_argument("--constructed", action="store_true", help="save the hand-built crashing inputs, then stop")
    a = ap.parse_args()
    if a.imports or a.constructed:
        if a.imports:
            import_dirs(a.imports, a.out)
        if a.constructed:
            save_constructed(a.out)
        return
    t0 = time.monotonic()
    stats = fuzz(a.seconds, a.seed, a.out, a.per_signature)
    dt = time.monotonic() - t0
    print(json.dumps({**stats, "seconds": round(dt, 1), "inputs_per_s": round(stats.get("inputs", 0) / dt, 1)}))


if __name__ == "__main__":
    main()
