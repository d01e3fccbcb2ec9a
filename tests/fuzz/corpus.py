"""Valid inputs for each fuzz target, to mutate from (hypothesis here, atheris's seed corpus in
``scripts/fuzz``): what real peers send."""
from __future__ import annotations

from pycrdt import Array, Doc, Map, Text

from collab import frames
from collab.capability import Capability
from collab.keys import Keypair
from collab.lib0 import var_bytes, var_string, var_uint
from relay.endpoints import yjs_protocol as yp

from tests.fuzz.yjs_seeds import seeds

_KEY = Keypair.from_seed(bytes(range(32)))


def _updates() -> list[bytes]:
    return [u for s in seeds() for u in s]


def _writer_runs() -> list[list[bytes]]:
    """Runs of one writer's consecutive transactions, as a Yjs client sends them: inserts (one with
    a character of two UTF-16 units), a deletion, a format, map and array entries."""
    doc = Doc(client_id=7)
    text, meta, items = doc.get("text", type=Text), doc.get("meta", type=Map), doc.get("items", type=Array)
    edits = [lambda: text.insert(0, "hello"), lambda: text.insert(5, " \U0001f30d"),
             lambda: text.format(0, 5, {"b": 1}), lambda: text.__delitem__(slice(1, 3)),
             lambda: meta.__setitem__("k", {"n": [1, 2.5, None, "x"]}),
             lambda: items.insert(0, [True, "y"]), lambda: text.insert(0, "\n")]
    ups = []
    for edit in edits:
        before = doc.get_state()
        edit()
        ups.append(doc.get_update(before))
    return [ups[:2], ups[:4], ups, ups[3:6]]


def corpus(target: str) -> list[bytes]:
    if target in ("frames", "canonical"):
        out = [frames.encode(f).encode() for f in (
            {"t": "hello", "key": "ab" * 32, "sig": "cd" * 64, "rid": 1},
            {"t": "sub", "feed": "doc/notes", "since": 0, "rid": "r-1"},
            {"t": "unsub", "feed": "chat/x"},
            {"t": "pub", "event": {"feed": "chat/x", "body": {"text": "hi \u00e9\u6f22", "n": [1, None, True]},
                                   "ts": 1700000000000}},
            {"t": "ping", "rid": -(2**53 - 1)},
        )]
        return [*out, b'{"t":"ping"}\n{"t":"sub","feed":"doc/a","since":3}', b'"\\ud800\\u0000"', b"[[[[[]]]]]"]
    if target == "capability":
        cap = Capability.issue(_KEY, "doc/notes", write=True, now=1_700_000_000_000)
        return [cap.token().encode(), frames.encode(cap.to_wire()).encode()]
    if target == "y_protocol":
        ups = [u for u in _updates() if len(u) < 400]
        aw = yp.encode_awareness([yp.AwarenessEntry(7, 3, '{"user":{"name":"a"}}'), yp.AwarenessEntry(9, 1, "null")])
        return [*(yp.sync_update(u) for u in ups[:8]), *(yp.sync_step2(u) for u in ups[8:12]),
                yp.sync_step1(b"\x02\x01\x05\x07\x02"), bytes((1,)) + var_bytes(aw), yp.query_awareness(),
                yp.sync_update(yp.EMPTY_UPDATE)]
    if target == "lib0":
        return [var_uint(0), var_uint(2**53 - 1), var_bytes(b"abc"), var_string("\u00e9\U0001f600"),
                b"\x02\x01\x05\x80\x80\x01\x02"]
    if target == "yjs_concat":
        return [var_uint(len(run)) + b"".join(var_bytes(u) for u in run) for run in _writer_runs()]
    if target == "yjs_sandbox":
        out = []
        for s in seeds()[:6]:
            out.append(var_uint(len(s[:4])) + b"".join(var_bytes(u) for u in s[:4]))
        return out + [u for u in _updates() if len(u) < 200][:8]
    raise ValueError(f"unknown target {target!r}")
