"""Ed25519 off the event loop, in a child process: publish signatures checked, receipts signed.

A signature check costs about 40 µs of CPU, the largest single item of a publish
(docs/benchmarks.md, issue 17). The event loop hands the signatures of the publishes it parsed
to a child process (``relay.core.verifier_child``) as one request and carries on; the child
answers one byte per signature. One request is in flight at a time: what is submitted while
the child works goes as the next request when the answer comes (under load, batches grow
instead of system calls per event). A thread would not do: the check releases
the GIL, but taking it back between two checks waits for the busy event loop (the GIL's switch
interval), so a verifying thread crawls exactly when the relay is loaded.

Nothing is sequenced before its signature is checked: a feed's worker waits for the checks of
its batch (``relay.core.worker``). When the child is not there (starting, gone, overrunning
``timeout``), the batch is checked in-process, by the same function, so every signature is
checked either way; the child is then started again (at most once per ``RESTART_DELAY``).

The same child signs the receipts of the records a feed's worker seals (:meth:`Verifier.sign`,
about 15 µs each): the worker seals a batch unsigned (the hash chain does not depend on the
signatures), has them signed here while the Yjs sandbox checks the batch, and puts them on the
records before the append. The child gets the relay's seed as its first request, over its pipe.
"""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections import deque
from typing import Any

from collab.events import Event
from collab.keys import Keypair, verify

from relay.core.verifier_child import LEN, READY

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds between two starts of the child
Batch = list[tuple[Event, bytes, "asyncio.Future[bool]"]]


def check_here(event: Event, signed: bytes) -> bool:
    """The check the child makes (``collab.keys.verify``), in this process."""
    return verify(bytes.fromhex(event.author), signed, bytes.fromhex(event.sig))


def _item(event: Event, signed: bytes) -> bytes:
    return bytes.fromhex(event.author) + bytes.fromhex(event.sig) + LEN.pack(len(signed)) + signed


class Verifier:
    """Checks event signatures in a child process, one request per event-loop turn."""

    def __init__(self, enabled: bool = True, timeout: float = 5.0, key: Keypair | None = None) -> None:
        self.enabled = enabled  # False: every check in-process (still batched per loop turn)
        self.timeout = timeout
        self.key = key  # the relay's key: receipts to sign (None: no signing here)
        self._signs: deque[tuple[list[bytes], asyncio.Future[list[bytes]]]] = deque()
        self.local_batches = 0  # batches checked in-process (the child not ready, gone or late)
        self.restarts = 0
        self._queue: Batch = []
        self._inflight: deque[tuple[bytes, Any]] = deque()  # (request kind, what it answers)
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self.up = asyncio.Event()  # set while the child answers (it said it is ready)
        self.down = asyncio.Event()  # set once a child was lost, until the next one is ready
        self._closed = False
        self._next_start = 0.0
        self._buf = b""
        self._out = b""
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def check(self, event: Event, signed: bytes) -> asyncio.Future[bool]:
        """Whether ``event``'s signature verifies over ``signed`` (its signing bytes)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((event, signed, fut))
        return fut

    def sign(self, receipts: list[bytes]) -> asyncio.Future[list[bytes]]:
        """The relay key's signatures of ``receipts`` (in order), made in the child while the
        event loop goes on (``collab.feedcore.FeedCore.seal`` with ``sign=False``)."""
        if self.key is None:
            raise RuntimeError("this verifier has no key to sign with")
        fut: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self._signs.append((receipts, fut))
        self._flush()
        return fut

    # -- batches -----------------------------------------------------------------------------
    def _flush(self) -> None:
        if self._inflight and self._ready:  # one request at a time: what queues meanwhile goes
            return                          # as the next one, when this one is answered
        if not self._ready:
            if self.enabled and not self._closed and self._proc is None and (self._queue or self._signs):
                self._start()
            while self._signs:
                self._sign_here(*self._signs.popleft())
            batch, self._queue = self._queue, []
            if batch:
                self._here(batch)
            return
        if self._signs:  # a worker waits for these: first
            receipts, fut = self._signs.popleft()
            self._request(b"S", (receipts, fut), b"".join(LEN.pack(len(r)) + r for r in receipts))
            return
        batch, self._queue = self._queue, []
        if batch:
            self._request(b"V", batch, b"".join(_item(ev, signed) for ev, signed, _ in batch))

    def _request(self, kind: bytes, what: Any, body: bytes) -> None:
        self._inflight.append((kind, what))
        self._send(LEN.pack(len(body) + 1) + kind + body)
        self._arm()

    def _here(self, batch: Batch) -> None:
        self.local_batches += 1
        for ev, signed, fut in batch:
            if not fut.done():
                fut.set_result(check_here(ev, signed))

    def _sign_here(self, receipts: list[bytes], fut: asyncio.Future[list[bytes]]) -> None:
        if not fut.done() and self.key is not None:
            fut.set_result([self.key.sign(r) for r in receipts])

    def _redo_here(self, kind: bytes, what: Any) -> None:
        if kind == b"V":
            self._here(what)
        elif kind == b"S":
            self._sign_here(*what)

    def _answer(self, payload: bytes) -> None:
        if not self._ready:
            if payload == READY:
                self._ready = True
                self.up.set()
                self.down.clear()
                return
            self._lost("it did not start properly")
            return
        if not self._inflight:
            self._lost("it answered a request never sent")
            return
        kind, what = self._inflight.popleft()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if kind == b"V" and len(payload) == len(what):
            for (_, _, fut), ok in zip(what, payload, strict=True):
                if not fut.done():
                    fut.set_result(ok == 1)
        elif kind == b"S" and len(payload) == 64 * len(what[0]):
            fut = what[1]
            if not fut.done():
                fut.set_result([payload[i:i + 64] for i in range(0, len(payload), 64)])
        elif kind != b"K" or payload != b"k":
            self._redo_here(kind, what)
            self._lost("its answer does not match the request")
            return
        self._flush()

    def _arm(self) -> None:
        if self._timer is None and self._inflight and self._loop is not None:
            self._timer = self._loop.call_later(self.timeout, self._lost, f"it took over {self.timeout:g} s")

    # -- the child ---------------------------------------------------------------------------
    def _start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        if loop.time() < self._next_start:
            return
        self._next_start = loop.time() + RESTART_DELAY
        try:  # a vfork/exec, as the Yjs sandbox starts its children; the argv is ours
            proc = subprocess.Popen(
                [sys.executable, "-m", "relay.core.verifier_child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError:
            log.warning("could not start the signature verifier; checking signatures in-process", exc_info=True)
            return
        if proc.stdin is None or proc.stdout is None:  # pragma: no cover - PIPE gives both
            proc.kill()
            return
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        self._proc, self._buf, self._out = proc, b"", b""
        loop.add_reader(proc.stdout.fileno(), self._readable, proc)
        if self.key is not None:  # its first request, answered once it is ready
            self._inflight.append((b"K", None))
            self._send(LEN.pack(33) + b"K" + self.key.seed)

    def _readable(self, proc: subprocess.Popen[bytes]) -> None:
        if proc is not self._proc or proc.stdout is None:
            return
        try:
            data = os.read(proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost("it ended")
            return
        buf = self._buf + data
        while len(buf) >= 4:
            (n,) = LEN.unpack_from(buf)
            if len(buf) < 4 + n:
                break
            payload, buf = buf[4:4 + n], buf[4 + n:]
            self._buf = buf
            self._answer(payload)
            if proc is not self._proc:  # lost meanwhile
                return
        self._buf = buf

    def _send(self, data: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or self._loop is None:
            self._lost("it has no input")
            return
        if self._out:
            self._out += data
            return
        try:
            n = os.write(proc.stdin.fileno(), data)
        except BlockingIOError:
            n = 0
        except OSError:
            self._lost("it stopped reading")
            return
        self._out = data[n:]
        if self._out:
            self._loop.add_writer(proc.stdin.fileno(), self._writable, proc)

    def _writable(self, proc: subprocess.Popen[bytes]) -> None:
        if proc is not self._proc or proc.stdin is None or self._loop is None:
            return
        try:
            self._out = self._out[os.write(proc.stdin.fileno(), self._out):]
        except BlockingIOError:
            return
        except OSError:
            self._lost("it stopped reading")
            return
        if not self._out:
            self._loop.remove_writer(proc.stdin.fileno())

    def _lost(self, why: str) -> None:
        """The child is unusable: check what it was asked in-process, drop it (started again on
        a later batch)."""
        proc, self._proc, self._ready = self._proc, None, False
        self.up.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if proc is not None:
            self.down.set()
            if not self._closed:
                log.warning("the signature verifier child is gone (%s); checking in-process meanwhile", why)
                self.restarts += 1
            self._drop(proc)
        while self._inflight:
            self._redo_here(*self._inflight.popleft())
        if self._queue or self._signs:  # held back behind the request in flight
            self._flush()

    def _drop(self, proc: subprocess.Popen[bytes]) -> None:
        if self._loop is not None:
            for f in (proc.stdout, proc.stdin):
                if f is not None and not f.closed:
                    self._loop.remove_reader(f.fileno())
                    self._loop.remove_writer(f.fileno())
        if proc.poll() is None:
            proc.kill()
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()
        self._out = b""

    async def close(self) -> None:
        """Answer what is pending (in-process) and stop the child."""
        self._closed = True
        proc = self._proc
        self._lost("closing")
        self._flush()
        if proc is not None:
            await asyncio.to_thread(proc.wait)


__all__ = ["Verifier", "check_here"]
