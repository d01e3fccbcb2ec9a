"""The Yjs sandbox's child process: ``python -m collab.sandbox_child [max_docs] [max_mb]``.

Reads request frames (``collab.sandbox``) on stdin, answers each with one reply frame on
stdout. A segfault, a panic outside the per-update checks or an exhausted memory limit ends
the process; the supervisor (``collab.sandbox_supervisor``) sees it and restarts it.
"""
from __future__ import annotations

import logging
import os
import sys

from . import childpipe
from .sandbox import MAX_DOCS, READY, Checker, Request

EXIT_ENGINE = 70  # the engine failed outside a per-update check (a panic or error at the end of a request)


def _limit_memory(mb: int) -> None:
    if mb <= 0:
        return
    import resource

    limit = mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def serve(stdin: int, stdout: int, checker: Checker) -> None:
    def answer(payload: bytes) -> bytes:
        try:
            return checker.handle(Request.decode(payload)).encode()
        except BaseException:  # any engine failure here: die, the supervisor restarts us
            logging.getLogger(__name__).exception("sandbox child: the engine failed")
            os._exit(EXIT_ENGINE)

    childpipe.serve(stdin, stdout, answer, READY)  # ready: the supervisor's time budget starts now


def main(argv: list[str]) -> None:
    max_docs = int(argv[0]) if argv else MAX_DOCS
    _limit_memory(int(argv[1]) if len(argv) > 1 else 0)
    serve(sys.stdin.fileno(), sys.stdout.fileno(), Checker(max_docs))


if __name__ == "__main__":
    main(sys.argv[1:])
