"""The Yjs sandbox's supervisor: an asyncio owner of the child processes (``collab.sandbox_child``).

``Sandbox.check(feed, tag, updates, state)`` answers one verdict per update (``collab.sandbox``:
OK, BAD, PANIC, CRASH, TIMEOUT) with one round trip per call while nothing goes wrong:

* the child holds each feed's document (an LRU); on a miss the supervisor sends ``state()``
  (the caller's document as one update, already vetted) and asks again;
* a reply that stops at a failing update: the rest is sent again with the state and the updates
  that passed before it (``prelude``);
* the child dies (segfault, memory limit, a panic outside the per-update check) or overruns the
  time budget (it is killed): it is restarted, and the updates of that request are checked again
  one at a time, each in a child holding exactly the state before it, so the culprit is found
  exactly and the innocent updates of the batch still pass. A culprit gets CRASH or TIMEOUT.

Children are picked by feed (a stable hash), so a feed's document lives in one child. A lock per
child keeps one request in flight per child. Usable by the relay and by ``collab`` alike.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from .namespaces.doc import next_digest
from .sandbox import BAD, CRASH, MAX_DOCS, OK, PANIC, READY, TIMEOUT, FrameBuffer, Reply, Request, frame

log = logging.getLogger(__name__)
START_TIMEOUT = 60.0  # seconds a child may take to import the engine (a loaded machine)


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    children: int = 1               # child processes (a feed always goes to the same one)
    max_docs: int = MAX_DOCS        # documents each child keeps (LRU; a miss costs sending the state)
    timeout: float = 5.0            # seconds a request may take before the child is killed
    update_timeout: float = 2.0     # seconds one update may take when checked alone
    max_mb: int = 1024              # the child's address-space limit (MiB; 0: none)


@dataclass(frozen=True, slots=True)
class Verdict:
    code: int
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.code == OK


class _Child:
    def __init__(self, settings: SandboxSettings, on_restart: Callable[[], None]) -> None:
        self.settings = settings
        self.lock = asyncio.Lock()
        self.proc: asyncio.subprocess.Process | None = None
        self.held: dict[str, tuple[int, int]] = {}  # what we believe the child holds (a hint)
        self._on_restart = on_restart
        self._buf = FrameBuffer()
        self._reply = b""

    async def _start(self) -> asyncio.subprocess.Process:
        env = dict(os.environ, RUST_BACKTRACE="0")
        s = self.settings
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collab.sandbox_child", str(s.max_docs), str(s.max_mb),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        self._buf = FrameBuffer()
        self.held.clear()
        if self.proc.stdout is None:
            raise RuntimeError("the sandbox child has no pipes")
        try:
            await asyncio.wait_for(self._read(self.proc.stdout), START_TIMEOUT)
        except (OSError, EOFError) as exc:  # TimeoutError included
            await self.kill()
            raise EOFError("the sandbox child did not start") from exc
        if self._reply != READY:
            await self.kill()
            raise EOFError("the sandbox child did not start")
        return self.proc

    async def kill(self) -> None:
        proc, self.proc = self.proc, None
        self.held.clear()
        if proc is None or proc.returncode is not None:
            return
        proc.kill()
        await proc.wait()

    async def ask(self, req: Request, timeout: float) -> Reply:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            if proc is not None:
                self._on_restart()
            proc = await self._start()
        if proc.stdin is None or proc.stdout is None:
            raise RuntimeError("the sandbox child has no pipes")
        try:
            proc.stdin.write(frame(req.encode()))
            await asyncio.wait_for(self._read(proc.stdout), timeout)
        except TimeoutError:  # before OSError: it is one
            await self.kill()
            self._on_restart()
            raise
        except (OSError, EOFError) as exc:
            code = await self._reap(proc)
            raise EOFError(f"the sandbox child ended ({code})") from exc
        return Reply.decode(self._reply)

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        while True:
            data = await stdout.read(1 << 16)
            if not data:
                raise EOFError("end of output")
            got = self._buf.feed(data)
            if got:
                self._reply = got[0]
                return

    async def _reap(self, proc: asyncio.subprocess.Process) -> int | None:
        try:
            code = await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
        self.proc = None
        self.held.clear()
        self._on_restart()
        return code


class Sandbox:
    """The supervised pool of sandbox children (an async context manager)."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        self.restarts = 0
        self._children = [_Child(self.settings, self._restarted) for _ in range(max(1, self.settings.children))]

    def _restarted(self) -> None:
        self.restarts += 1

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        for c in self._children:
            await c.kill()

    def _child(self, feed: str) -> _Child:
        return self._children[zlib.crc32(feed.encode()) % len(self._children)]

    async def check(self, feed: str, tag: tuple[int, int], updates: Sequence[bytes],
                    state: Callable[[], bytes], *, keep: bool = True) -> list[Verdict]:
        """One verdict per update of ``updates``, checked in order on the document ``state()``
        (whose tag is ``tag``) plus the updates before it that pass. ``keep=False``: a probe
        (the child keeps nothing of it; ``state`` is sent every time)."""
        if not updates:
            return []
        child = self._child(feed)
        async with child.lock:
            return await self._check(child, feed, tag, list(updates), state, keep)

    async def _check(self, child: _Child, feed: str, tag: tuple[int, int], updates: list[bytes],
                     state: Callable[[], bytes], keep: bool = True) -> list[Verdict]:
        out: list[Verdict] = []
        passed: list[bytes] = []
        send_state = not keep or child.held.get(feed) != tag
        while len(out) < len(updates):
            rest = updates[len(out):]
            req = Request(feed, tag, rest, keep=keep)
            if send_state:
                req.state, req.prelude = state(), list(passed)
            try:
                reply = await child.ask(req, self.settings.timeout)
            except (EOFError, TimeoutError) as exc:
                log.warning("the Yjs sandbox child for %s %s; checking %d update(s) one by one",
                            feed, "timed out" if isinstance(exc, TimeoutError) else "died", len(rest))
                out += await self._one_by_one(child, feed, tag, passed, rest, state, keep)
                return out
            if reply.split:
                if keep:
                    child.held.pop(feed, None)
                out += await self._one_by_one(child, feed, tag, passed, rest, state, keep)
                return out
            if reply.miss:
                if send_state:
                    raise RuntimeError("the sandbox child missed a document it was sent")
                send_state = True
                continue
            for v in reply.verdicts:
                if v == OK:
                    passed.append(updates[len(out)])
                out.append(Verdict(v, reply.reason if v != OK else ""))
            if len(out) < len(updates):  # it stopped at a failure and forgot the document
                send_state = True
                if keep:
                    child.held.pop(feed, None)
            elif keep:
                child.held[feed] = _roll(tag, passed)
        return out

    async def _one_by_one(self, child: _Child, feed: str, tag: tuple[int, int], passed: list[bytes],
                          rest: list[bytes], state: Callable[[], bytes], keep: bool = True) -> list[Verdict]:
        out: list[Verdict] = []
        fresh = True
        for u in rest:
            req = Request(feed, _roll(tag, passed), [u], keep=keep)
            if fresh or not keep:
                req.tag, req.state, req.prelude = tag, state(), list(passed)
            try:
                reply = await child.ask(req, self.settings.update_timeout + (0 if not fresh else self.settings.timeout))
            except TimeoutError:
                out.append(Verdict(TIMEOUT, "the update overran the sandbox's time budget"))
                fresh = True
                continue
            except EOFError as exc:
                out.append(Verdict(CRASH, f"the update crashed the Yjs engine: {exc}"))
                fresh = True
                continue
            if reply.miss or reply.split:  # cannot happen (a fresh state; one update): be safe
                fresh = True
                out.append(Verdict(BAD, "the sandbox could not check the update"))
                continue
            v = reply.verdicts[0]
            out.append(Verdict(v, reply.reason if v != OK else ""))
            if v == OK:
                passed.append(u)
                fresh = False
            else:
                fresh = True
        if not keep:
            return out
        if not fresh:
            child.held[feed] = _roll(tag, passed)
        else:
            child.held.pop(feed, None)
        return out


def _roll(tag: tuple[int, int], updates: list[bytes]) -> tuple[int, int]:
    """The tag of the document ``tag`` after ``updates`` (DocState.apply_update's digest)."""
    gen, digest = tag
    for u in updates:
        digest = next_digest(digest, u)
    return gen, digest


__all__ = ["BAD", "CRASH", "OK", "PANIC", "TIMEOUT", "Sandbox", "SandboxSettings", "Verdict"]
