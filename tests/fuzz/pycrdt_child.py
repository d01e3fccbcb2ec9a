"""The child side of the pycrdt crash runner (run as ``python -m tests.fuzz.pycrdt_child``).

pycrdt (yrs) can segfault or raise ``pyo3_runtime.PanicException`` (a BaseException) on a malformed
Yjs update, so the fuzzer never calls it in its own process. This child reads jobs from stdin and
answers one line per operation on stdout, flushed before the next operation starts; when it dies,
the parent knows the operation that killed it from the number of lines it got.

A job on stdin: u32 count, then ``count`` parts, each u32 length + bytes (little-endian). Part 0 is
the comma-separated operation names; the last part is the input update ``u``; the parts between are
the ``prefix``: valid updates applied before ``u`` by the ``seq`` operation.

Operations (each on fresh objects):
  apply   Doc().apply_update(u)
  merge   merge_updates(u, u)
  state   get_state(u)
  diff    get_update(u, sv) with sv the state vector of the prefix applied to a Doc
  docget  Doc().apply_update(u) (a ValueError there is ignored), then doc.get_update()
  seq     the prefix then u applied to one Doc, then doc.get_update()
  reuse   as seq, but any error from applying u (a panic too) is caught and the Doc used again:
          get_update(), get_state(), the prefix applied once more (what a server that catches
          BaseException and keeps the document would do next)

An answer line: ``ok``, ``exc <Type>: <message>`` or ``panic <message>`` (messages escaped, one line).
"""
from __future__ import annotations

import contextlib
import struct
import sys
from collections.abc import Callable

import pycrdt

OPS = ("apply", "merge", "state", "diff", "docget", "seq", "reuse")


def _prefix_doc(prefix: list[bytes]) -> pycrdt.Doc:
    doc: pycrdt.Doc = pycrdt.Doc()
    for p in prefix:
        doc.apply_update(p)
    return doc


def _docget(u: bytes) -> None:
    doc: pycrdt.Doc = pycrdt.Doc()
    with contextlib.suppress(ValueError):  # a refused update: what the doc holds afterwards is encoded
        doc.apply_update(u)
    doc.get_update()


def _seq(prefix: list[bytes], u: bytes) -> None:
    doc = _prefix_doc(prefix)
    doc.apply_update(u)
    doc.get_update()


def _reuse(prefix: list[bytes], u: bytes) -> None:
    doc = _prefix_doc(prefix)
    try:
        doc.apply_update(u)
    except BaseException as e:  # the scenario under test: the caller survives a panic
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
    doc.get_update()
    doc.get_state()
    for p in prefix:
        doc.apply_update(p)


def op_call(name: str, prefix: list[bytes], u: bytes) -> Callable[[], object]:
    if name == "apply":
        return lambda: pycrdt.Doc().apply_update(u)
    if name == "merge":
        return lambda: pycrdt.merge_updates(u, u)
    if name == "state":
        return lambda: pycrdt.get_state(u)
    if name == "diff":
        return lambda: pycrdt.get_update(u, _prefix_doc(prefix).get_state())
    if name == "docget":
        return lambda: _docget(u)
    if name == "seq":
        return lambda: _seq(prefix, u)
    if name == "reuse":
        return lambda: _reuse(prefix, u)
    raise ValueError(f"unknown operation {name!r}")


def run_op(name: str, prefix: list[bytes], u: bytes) -> str:
    call = op_call(name, prefix, u)
    try:
        call()
    except BaseException as e:  # PanicException is a BaseException: reported
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        msg = str(e).encode("unicode_escape").decode("ascii")[:300]
        if type(e).__name__ == "PanicException":
            return f"panic {msg}"
        return f"exc {type(e).__name__}: {msg}"
    return "ok"


def _read_exact(n: int) -> bytes:
    data = sys.stdin.buffer.read(n)
    if len(data) != n:
        raise EOFError
    return data


def main() -> None:
    out = sys.stdout
    while True:
        try:
            (count,) = struct.unpack("<I", _read_exact(4))
            parts = []
            for _ in range(count):
                (n,) = struct.unpack("<I", _read_exact(4))
                parts.append(_read_exact(n))
        except EOFError:
            return
        ops = parts[0].decode().split(",")
        prefix, u = parts[1:-1], parts[-1]
        for name in ops:
            out.write(run_op(name, prefix, u) + "\n")
            out.flush()
        out.write("done\n")
        out.flush()


if __name__ == "__main__":
    main()
