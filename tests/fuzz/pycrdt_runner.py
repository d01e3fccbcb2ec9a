"""Run pycrdt operations on untrusted updates in a child process and classify what happens.

``PycrdtRunner`` keeps one child (tests/fuzz/pycrdt_child.py) alive across inputs and restarts it
when an input kills it. Each operation on an input ends as one ``Outcome``:

  ok        the call returned
  exc       it raised an ordinary Exception (pycrdt's ValueError for a refused update)
  panic     it raised pyo3_runtime.PanicException (a BaseException: ``except Exception`` misses it)
  segfault  the child died (negative return code: the signal, e.g. -11 SIGSEGV, -6 SIGABRT)
  hang      no answer within the time bound; the child is killed
"""
from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.fuzz.pycrdt_child import OPS

ROOT = Path(__file__).resolve().parent.parent.parent
CRASHES = ("panic", "segfault", "hang")


@dataclass(frozen=True)
class Outcome:
    op: str
    kind: str          # ok | exc | panic | segfault | hang
    detail: str = ""   # the exception or panic message, or the signal name

    @property
    def crashed(self) -> bool:
        return self.kind in CRASHES


def encode_job(ops: tuple[str, ...], prefix: list[bytes], u: bytes) -> bytes:
    parts = [",".join(ops).encode(), *prefix, u]
    return struct.pack("<I", len(parts)) + b"".join(struct.pack("<I", len(p)) + p for p in parts)


class PycrdtRunner:
    """One child process that applies updates with pycrdt; ``run`` answers one Outcome per op."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._buf = b""

    def __enter__(self) -> PycrdtRunner:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   RUST_BACKTRACE="0", PYTHONFAULTHANDLER="")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.pycrdt_child"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.starts += 1
        self._buf = b""
        return self.proc

    def close(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()

    def _readline(self, proc: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        """The next line, or None when the child died or the deadline passed (then it is killed)."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def run(self, u: bytes, prefix: list[bytes] | None = None, ops: tuple[str, ...] = OPS) -> list[Outcome]:
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        assert proc.stdin is not None
        try:
            proc.stdin.write(encode_job(ops, prefix or [], u))
            proc.stdin.flush()
        except BrokenPipeError:
            self.proc = None
            return self.run(u, prefix, ops)
        out: list[Outcome] = []
        for op in ops:
            line = self._readline(proc, time.monotonic() + self.timeout)
            if line is None:
                out.append(self._died(proc, op))
                return out
            text = line.decode()
            kind, _, detail = text.partition(" ")
            out.append(Outcome(op, kind, detail))
        done = self._readline(proc, time.monotonic() + self.timeout)
        assert done == b"done", done
        return out

    def _died(self, proc: subprocess.Popen[bytes], op: str) -> Outcome:
        self.proc = None
        try:
            rc = proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return Outcome(op, "hang", f"no answer in {self.timeout}s")
        finally:
            for s in (proc.stdin, proc.stdout):
                if s:
                    s.close()
        if rc < 0:
            return Outcome(op, "segfault", signal.Signals(-rc).name)
        return Outcome(op, "segfault", f"exit {rc}")  # a Rust abort that exits non-zero is a crash too
