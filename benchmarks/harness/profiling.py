"""py-spy profiling of a server during the measured window, and the summary of its output.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path


class Profiler:
    """py-spy record on the server during the measured window (optional)."""

    def __init__(self, pid: int, duration: float, out: Path) -> None:
        self.out = out
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(duration))), "--rate", "250",
             "--format", "raw", "--threads", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def finish(self) -> str:
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "py-spy did not finish"
        if not self.out.exists():
            return f"py-spy wrote nothing: {err[-500:]}"
        return summarize_profile(self.out)


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive shares per function of the event-loop (main) thread, from py-spy's
    collapsed stacks. Other threads are listed by sample count only: py-spy counts a thread
    blocked inside a C call (sqlite's fsync, a queue wait) as active, so their samples are
    wall time, not CPU (bench_doc's per-thread CPU figures from /proc are the reliable ones)."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    main = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        k = int(n)
        frames_ = [f for f in stack.split(";") if f]
        thread = frames_[0] if frames_ and frames_[0].startswith("thread ") else "?"
        per_thread[thread] += k
        if not thread.endswith("MainThread"):
            continue
        main += k
        frames_ = frames_[1:]
        if frames_:
            self_c[_short(frames_[-1])] += k
        for f in {_short(f) for f in frames_}:
            incl_c[f] += k
    if not main:
        return "(no main-thread samples)"
    lines = ["samples per thread: " + ", ".join(f"{t}: {c}" for t, c in per_thread.most_common()), "",
             f"main thread (event loop), {main} samples", "self%   function"]
    lines += [f"{100 * c / main:5.1f}   {f}" for f, c in self_c.most_common(top)]
    lines += ["", "incl%   function"]
    lines += [f"{100 * c / main:5.1f}   {f}" for f, c in incl_c.most_common(top + 15)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy raw frames look like "func (path/to/file.py:123)"; drop the line number, shorten the path
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    fn, path = m.groups()
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{fn} ({path})"
