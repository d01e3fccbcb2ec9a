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
records before the append. The child gets the relay's seed as its first request, over its pipe
(``collab.childpipe``, the channel the Yjs sandbox's children use too).

A request too small to pay for its round trip (fewer than ``MIN_CHILD_CHECKS`` checks, or
``MIN_CHILD_SIGNS`` receipts) is done in-process at once (``Verifier._small``): a round trip to
the child costs the relay and the child together about what six checks or fifteen signatures
cost, because the child sleeps between requests and wakes cold, at a few hundred requests a
second too (docs/benchmarks.md, issue 12, "bench_doc saturation: the verifier's round trips").
So at a low rate and at bench_doc's saturation (batches of about ten publishes) the crypto is
done here, and the child takes the large batches of a relay near its signature limit.
"""
from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections import deque
from typing import Any

from collab.childpipe import ChildPipe
from collab.events import Event
from collab.keys import Keypair, verify

from relay.core.verifier_child import LEN, READY

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds between two starts of the child
MIN_CHILD_CHECKS = 8  # a request of fewer signature checks (about 45 µs each) is made in-process
MIN_CHILD_SIGNS = 16  # a request of fewer receipts to sign (about 20 µs each) is made in-process
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
        self.min_checks, self.min_signs = MIN_CHILD_CHECKS, MIN_CHILD_SIGNS
        self.small = 0  # requests too small for a round trip, made in-process (_small)
        self.requests = 0  # requests sent to the child (checks or receipts, one batch each)
        self.restarts = 0
        self._queue: Batch = []
        self._inflight: deque[tuple[bytes, Any]] = deque()  # (request kind, what it answers)
        self._pipe: ChildPipe | None = None
        self._ready = False
        self.up = asyncio.Event()  # set while the child answers (it said it is ready)
        self.down = asyncio.Event()  # set once a child was lost, until the next one is ready
        self._closed = False
        self._next_start = 0.0
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
        if self._ready:
            self._small()
        if self._inflight and self._ready:  # one request at a time: what queues meanwhile goes
            return                          # as the next one, when this one is answered
        if not self._ready:
            if self.enabled and not self._closed and self._pipe is None and (self._queue or self._signs):
                self._start()
            while self._signs:
                self._sign_here(*self._signs.popleft())
            batch, self._queue = self._queue, []
            if batch:
                self._here(batch)
            return
        if self._signs:  # a worker waits for these: first (one request; the rest goes next)
            receipts, fut = self._signs.popleft()
            self._request(b"S", (receipts, fut), b"".join(LEN.pack(len(r)) + r for r in receipts))
            return
        batch, self._queue = self._queue, []
        if batch:
            self._request(b"V", batch, b"".join(_item(ev, signed) for ev, signed, _ in batch))

    def _small(self) -> None:
        """Make here, now, the requests too small to pay for a round trip to the child (a few
        hundred µs of the two processes' CPU together: docs/benchmarks.md, issue 12): receipts
        to sign in requests of fewer than ``min_signs``, and the queued checks when fewer than
        ``min_checks``. Larger ones go to the child, one request at a time, as before."""
        if any(len(r) < self.min_signs for r, _ in self._signs):
            keep: deque[tuple[list[bytes], asyncio.Future[list[bytes]]]] = deque()
            for receipts, fut in self._signs:
                if len(receipts) < self.min_signs:
                    self.small += 1
                    self._sign_here(receipts, fut)
                else:
                    keep.append((receipts, fut))
            self._signs = keep
        # checks resolve in the order they were submitted (the sequencer hands publishes off in
        # that order): a small batch is made here only when no batch of checks is at the child
        if self._queue and len(self._queue) < self.min_checks and not any(k == b"V" for k, _ in self._inflight):
            batch, self._queue = self._queue, []
            self.small += 1
            for ev, signed, vfut in batch:
                if not vfut.done():
                    vfut.set_result(check_here(ev, signed))

    def _request(self, kind: bytes, what: Any, body: bytes) -> None:
        self.requests += 1
        self._inflight.append((kind, what))
        if self._pipe is None:  # pragma: no cover - ready means a pipe
            self._lost("it has no input")
            return
        self._pipe.send(kind + body)  # a failure: _lost, at once
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
            self._pipe = ChildPipe([sys.executable, "-m", "relay.core.verifier_child"], self._answer, self._lost)
        except OSError:
            log.warning("could not start the signature verifier; checking signatures in-process", exc_info=True)
            return
        if self.key is not None:  # its first request, answered once it is ready
            self._inflight.append((b"K", None))
            self._pipe.send(b"K" + self.key.seed)

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        return None if self._pipe is None else self._pipe.proc

    def _lost(self, why: str) -> None:
        """The child is unusable: check what it was asked in-process, drop it (started again on
        a later batch)."""
        pipe, self._pipe, self._ready = self._pipe, None, False
        self.up.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if pipe is not None:
            self.down.set()
            if not self._closed:
                log.warning("the signature verifier child is gone (%s); checking in-process meanwhile", why)
                self.restarts += 1
            pipe.close()
        while self._inflight:
            self._redo_here(*self._inflight.popleft())
        if self._queue or self._signs:  # held back behind the request in flight
            self._flush()

    async def close(self) -> None:
        """Answer what is pending (in-process) and stop the child."""
        self._closed = True
        pipe = self._pipe
        self._lost("closing")
        self._flush()
        if pipe is not None:
            await pipe.wait()


__all__ = ["Verifier", "check_here"]
