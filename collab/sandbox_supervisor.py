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
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from .namespaces.doc import next_digest
from .childpipe import ChildPipe
from .sandbox import BAD, CRASH, MAX_DOCS, OK, PANIC, READY, TIMEOUT, Reply, Request

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
    """One child process behind a :class:`collab.childpipe.ChildPipe` (the event loop pumps its
    pipes: a round trip costs two system calls and one future) and the one reply awaited."""

    def __init__(self, settings: SandboxSettings, on_restart: Callable[[], None]) -> None:
        self.settings = settings
        self.lock = asyncio.Lock()
        self.pipe: ChildPipe | None = None
        self.held: dict[str, tuple[int, int]] = {}  # what we believe the child holds (a hint)
        self._on_restart = on_restart
        self._reply: asyncio.Future[bytes] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.pipe is None else self.pipe.proc

    async def _start(self) -> ChildPipe:
        env = dict(os.environ, RUST_BACKTRACE="0")
        s = self.settings
        self.held.clear()
        pipe = self.pipe = ChildPipe([sys.executable, "-m", "collab.sandbox_child", str(s.max_docs), str(s.max_mb)],
                                     self._settle, self._ended, env)
        fut = self._expect(START_TIMEOUT)  # nothing is read before the loop runs: its ready frame waits
        try:
            ready = await fut
        except (OSError, EOFError) as exc:  # TimeoutError included
            await self.kill()
            raise EOFError("the sandbox child did not start") from exc
        if ready != READY:
            await self.kill()
            raise EOFError("the sandbox child did not start")
        return pipe

    def _ended(self, why: str) -> None:
        self._settle(EOFError(f"the sandbox child's pipe: {why}"))

    def _settle(self, outcome: bytes | BaseException) -> None:
        fut, self._reply = self._reply, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if fut is None or fut.done():
            return
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)

    def _expect(self, timeout: float) -> asyncio.Future[bytes]:
        """The future of the next reply, settled with a TimeoutError after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        self._reply = fut
        self._timer = loop.call_later(timeout, self._settle, TimeoutError("the sandbox child did not answer in time"))
        return fut

    async def kill(self) -> None:
        pipe, self.pipe = self.pipe, None
        self.held.clear()
        if pipe is None:
            return
        pipe.close()
        await pipe.wait()

    async def ask(self, req: Request, timeout: float) -> Reply:
        pipe = self.pipe
        if pipe is None or not pipe.open:  # never started, or its pipe ended (it died between requests)
            if pipe is not None:
                await self.kill()
                self._on_restart()
            pipe = await self._start()
        fut = self._expect(timeout)
        pipe.send(req.encode())  # a failure settles ``fut`` (EOFError) at once
        try:
            payload = await fut
        except TimeoutError:  # before OSError: it is one
            await self.kill()
            self._on_restart()
            raise
        except (OSError, EOFError) as exc:
            code = await self._reap(pipe)
            raise EOFError(f"the sandbox child ended ({code})") from exc
        return Reply.decode(payload)

    async def _reap(self, pipe: ChildPipe) -> int | None:
        code = await pipe.wait(5)
        pipe.close()
        self.pipe = None
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
                    state: Callable[[], bytes], *, keep: bool = True, full: bool = False) -> list[Verdict]:
        """One verdict per update of ``updates``, checked in order on the document ``state()``
        (whose tag is ``tag``) plus the updates before it that pass. ``keep=False``: a probe
        (the child keeps nothing of it; ``state`` is sent every time). ``full``: the child also
        encodes the whole document at the end (O(document): before a snapshot, on load);
        otherwise only what the updates changed. ``state()`` may raise (e.g.
        ``EnginePanic``): it propagates."""
        if not updates:
            return []
        child = self._child(feed)
        async with child.lock:
            return await self._check(child, feed, tag, list(updates), state, keep, full)

    async def _check(self, child: _Child, feed: str, tag: tuple[int, int], updates: list[bytes],
                     state: Callable[[], bytes], keep: bool = True, full: bool = False) -> list[Verdict]:
        out: list[Verdict] = []
        passed: list[bytes] = []
        send_state = not keep or child.held.get(feed) != tag
        while len(out) < len(updates):
            rest = updates[len(out):]
            req = Request(feed, tag, rest, keep=keep, full=full)
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
            req = Request(feed, _roll(tag, passed), [u], keep=keep, full=True)  # the culprit, exactly
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
