#!/usr/bin/env python3
"""CPU per event of each stage of the publish path, sans I/O (issue 17's per-event budget).

The relay's own code, on events the bench's writers would send (``doc.update`` Yjs inserts by
10 writers on ``doc/bench``, or generic ``bench.note`` events on ``note/bench``): the ``pub``
frame's JSON parse, the event's checks without its signature (shape, canonical signing bytes,
id), the Ed25519 verification, the seal of batches of 64 (access, the namespace's validation,
receipt, relay signature, record line; the relay signature alone is also timed), and the
commit (the fold: the Yjs apply for documents). CPU time (``time.process_time``) of many events,
the least of ``--repeat`` rounds, so a machine shared with other work disturbs it less than
wall time; sockets, the Yjs sandbox's round trip, SQLite and fan-out are not in it (bench_doc
measures the whole relay).

With ``--baseline-ref REF`` the same stages run on the code of REF too (a temporary git
worktree, as bench_doc's A/B), each tree in its own process, rounds interleaved.

    python benchmarks/bench_stages.py                         # this tree, doc and note
    python benchmarks/bench_stages.py --baseline-ref main     # this tree vs main
    python benchmarks/bench_stages.py --quick                 # CI smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("parse", "check", "verify", "seal", "sign", "commit")
BATCH = 64


def _events(kind: str, n: int) -> tuple[str, list[str]]:
    from pycrdt import Doc, Text

    from collab import frames
    from collab.events import Event, b64
    from collab.keys import Keypair

    feed = "doc/bench" if kind == "doc" else "note/bench"
    keys = [Keypair.from_seed(bytes([65 + i]) * 32) for i in range(10)]
    docs: list[Doc[Any]] = []
    for _ in keys:
        d: Doc[Any] = Doc()
        d["text"] = Text()
        docs.append(d)
    texts = []
    for i in range(n):
        w = i % len(keys)
        marker = f"w{w:02d}n{i:08d};"
        if kind == "doc":
            d = docs[w]
            sv = d.get_state()
            text = d["text"]
            text += marker
            ev = Event.create(keys[w], feed, "doc.update", {"update": b64(d.get_update(sv))})
        else:
            ev = Event.create(keys[w], feed, "bench.note", {"m": marker})
        texts.append(frames.encode({"t": "pub", "event": ev.to_wire()}))
    return feed, texts


def measure(kind: str, n: int) -> dict[str, float]:
    """µs of CPU per event in each stage, on this interpreter's ``collab``."""
    from collab import frames
    from collab.events import Event, now_ms
    from collab.feedcore import FeedCore
    from collab.keys import Keypair, verify
    from collab.namespaces import default_registry

    feed, texts = _events(kind, n)
    relay = Keypair.from_seed(b"R" * 32)
    clock = time.process_time
    t = clock()
    parsed = [frames.parse(x) for x in texts]
    parse = clock() - t
    t = clock()
    events = [Event.from_wire(f["event"], verify_sig=False) for f in parsed]
    check = clock() - t
    signed = [e.signing_bytes() for e in events]
    t = clock()
    for e, s in zip(events, signed, strict=True):
        verify(bytes.fromhex(e.author), s, bytes.fromhex(e.sig))
    ver = clock() - t
    core = FeedCore(feed, default_registry().for_feed(feed))
    seal = commit = 0.0
    for k in range(0, n, BATCH):
        batch = [(e, e.author) for e in events[k:k + BATCH]]
        t = clock()
        out = core.seal(batch, relay, now_ms(), 1 << 20)
        seal += clock() - t
        if len(out.records) != len(batch):
            raise RuntimeError(f"{kind}: the seal refused events: {out.answers[:2]}")
        t = clock()
        core.commit(out.lines())
        commit += clock() - t
    t = clock()
    for s in signed:
        relay.sign(s)
    sign = clock() - t
    return {k: v / n * 1e6 for k, v in zip(STAGES, (parse, check, ver, seal, sign, commit), strict=True)}


def _child(args: argparse.Namespace) -> None:
    print(json.dumps({kind: measure(kind, args.events) for kind in args.kinds.split(",")}))


def _run_tree(path: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    env = dict(os.environ, PYTHONPATH=str(path))
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--events", str(args.events),
                          "--kinds", args.kinds], env=env, capture_output=True, text=True, check=False, cwd=path)
    if out.returncode != 0:
        raise RuntimeError(f"stage run in {path} failed:\n{out.stderr[-2000:]}")
    result: dict[str, dict[str, float]] = json.loads(out.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    from harness import ab

    ap = argparse.ArgumentParser(description="CPU per event of each stage of the publish path (sans I/O)")
    ap.add_argument("--quick", action="store_true", help="few events, one round (CI smoke run)")
    ap.add_argument("--events", type=int, default=None, help="events per round (default 3000; quick 200)")
    ap.add_argument("--repeat", type=int, default=None, help="rounds per tree; the least CPU counts (default 3)")
    ap.add_argument("--kinds", default="doc,note", help="comma list of doc, note")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ab.add_argument(ap)
    args = ap.parse_args(argv)
    args.events = args.events or (200 if args.quick else 3000)
    if args.child:
        _child(args)
        return 0
    repeat = args.repeat or (1 if args.quick else 3)
    started = time.time()
    with contextlib.ExitStack() as stack:
        baseline = ab.open_baseline(stack, args.baseline_ref)
        trees = {ab.CURRENT: ab.current_tree().path}
        if baseline is not None:
            trees[ab.BASELINE] = baseline.path
        rounds: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
        for _ in range(repeat):
            for name, path in trees.items():
                rounds[name].append(_run_tree(path, args))
    best = {name: {kind: {s: min(r[kind][s] for r in rs) for s in STAGES} for kind in rs[0]}
            for name, rs in rounds.items()}
    print(f"CPU µs per event by stage (least of {repeat} round(s) of {args.events} events; sign is part of seal)")
    head = f"{'kind':5} {'tree':16}" + "".join(f"{s:>9}" for s in STAGES) + f"{'total':>9}"
    print(head)
    for kind in args.kinds.split(","):
        for name in trees:
            st = best[name][kind]
            total = sum(v for s, v in st.items() if s != "sign")
            print(f"{kind:5} {name:16}" + "".join(f"{st[s]:9.1f}" for s in STAGES) + f"{total:9.1f}")
    out = {"benchmark": "bench_stages", "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)), "events": args.events,
           "repeat": repeat, "trees": {k: str(v) for k, v in trees.items()},
           "baseline_ref": args.baseline_ref, "stages_us": best, "rounds": rounds}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
