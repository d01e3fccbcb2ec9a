"""One reconnecting connection: the loop, the backoff and the writer that the agent SDK's
:class:`collab.client.Client` and the relay's federation link (``relay.federation.link``) share.

* :func:`backoff_delay`: capped exponential backoff with jitter (a delay drawn from the upper
  half of ``min(cap, base * 2**attempt)``), so clients cut off together do not return together.
* :class:`Reconnecting`: a base whose ``_run_loop`` calls the subclass's ``_attempt`` (connect,
  handshake, serve until lost) again and again, sleeping :func:`backoff_delay` in between; the
  attempt count starts over once a connection stayed up longer than the cap.
* :class:`Writer`: one live connection's writer task: every text frame queued during one loop
  turn goes out as one WebSocket message (frames separated by ``\\n``, up to
  ``MAX_MESSAGE_BYTES`` of UTF-8).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import random
from abc import ABC, abstractmethod
from collections import deque

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 << 10   # coalesce outgoing frames up to this (relay default limit: 1 MiB)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 first): jittered, capped exponential."""
    delay: float = min(cap, base * (2 ** min(attempt, 30)))
    return delay / 2 + random.uniform(0, delay / 2)


class Next(enum.Enum):
    """What the loop does after an attempt."""

    STOP = "stop"      # give up for good (closed, refused, reconnect disabled)
    NOW = "now"        # try again at once (e.g. the next URL of the first connection)
    LATER = "later"    # try again after the backoff


class Reconnecting(ABC):
    """A connection that is made again after every loss, with :func:`backoff_delay` between tries."""

    def __init__(self, backoff_base: float = 0.1, backoff_max: float = 5.0) -> None:
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.reconnects = 0  # backoff waits so far (each followed by a new attempt)
        self._closing = False
        self._up_since: float | None = None

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base, self.backoff_max)

    def _mark_up(self) -> None:
        """Call when a connection's handshake is done (a long-lived one resets the backoff)."""
        self._up_since = asyncio.get_running_loop().time()

    @abstractmethod
    async def _attempt(self) -> Next:
        """Connect, handshake (then ``_mark_up``), serve until the connection is lost or closed."""

    async def _run_loop(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._closing:
            self._up_since = None
            after = await self._attempt()
            if after is Next.STOP or self._closing:
                return
            if after is Next.NOW:
                continue
            if self._up_since is not None and loop.time() - self._up_since > self.backoff_max:
                attempt = 0
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1
            self.reconnects += 1


class Writer:
    """One live connection's writer: frames queued in one loop turn go out as one message."""

    def __init__(self, ws: ClientConnection, name: str = "colony-writer") -> None:
        self.ws = ws
        self.out: deque[str] = deque()
        self._wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name=name)

    def send(self, frame: str) -> None:
        self.out.append(frame)
        self._wake.set()

    async def _run(self) -> None:
        out = self.out
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while out:
                    parts: list[str] = []
                    size = 0
                    while out and (not parts or size + utf8_size(out[0]) < MAX_MESSAGE_BYTES):
                        frame = out.popleft()
                        parts.append(frame)
                        size += utf8_size(frame) + 1
                    await self.ws.send("\n".join(parts))
        except ConnectionClosed:
            pass
        except Exception:  # logged with its traceback; a fresh connection repairs it
            log.exception("writer failed; dropping the connection")
            self.ws.transport.abort()

    def stop(self) -> None:
        self.task.cancel()


async def recv_within(ws: ClientConnection, timeout: float) -> str | bytes:
    """The next message, or TimeoutError after ``timeout`` s. ``asyncio.timeout``, not
    ``wait_for``: on Python 3.11 ``wait_for`` returns the message and drops a cancellation that
    arrives as the message does, so a client closed during its handshake went on serving."""
    async with asyncio.timeout(timeout):
        return await ws.recv()


async def close_politely(ws: ClientConnection) -> None:
    """Close (bounded by the connection's close_timeout); abort the socket if that cannot finish."""
    try:
        await ws.close()
    except asyncio.CancelledError:
        ws.transport.abort()
        raise
    except Exception:  # the socket is gone either way
        log.debug("closing the connection failed; aborted it", exc_info=True)
        ws.transport.abort()


def utf8_size(frame: str) -> int:
    """UTF-8 size of a frame (the relay's message limit is in bytes)."""
    return len(frame) if frame.isascii() else len(frame.encode("utf-8", "surrogatepass"))


__all__ = ["MAX_MESSAGE_BYTES", "Next", "Reconnecting", "Writer", "backoff_delay", "close_politely", "utf8_size"]
