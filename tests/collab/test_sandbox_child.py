"""collab/sandbox_child.py: the child process over real pipes."""
from __future__ import annotations

import subprocess
import sys

from collab.sandbox import OK, PANIC, READY, FrameBuffer, Reply, Request, frame

from tests.collab.yjs_inputs import crashers, edits


def test_the_child_answers_requests_and_survives_panics() -> None:
    [a] = edits("hello")
    bomb = next(x for x in crashers() if x.name == "a_panic_apply_alone")
    reqs = [Request("doc/c", (1, 0), [a, bomb.update], state=b""), Request("doc/c", (1, 0), [a])]
    proc = subprocess.run([sys.executable, "-m", "collab.sandbox_child", "4", "0"], check=False, timeout=60,
                          input=b"".join(frame(r.encode()) for r in reqs), capture_output=True)
    assert proc.returncode == 0  # stdin closed: it ends quietly
    ready, first, second = FrameBuffer().feed(proc.stdout)
    assert ready == READY
    assert Reply.decode(first).verdicts == [OK, PANIC]
    assert Reply.decode(second).miss  # the document was forgotten after the failure
