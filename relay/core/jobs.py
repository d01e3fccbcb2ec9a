"""The jobs a feed's worker (``relay.core.worker.FeedRuntime``) takes from its queue, in order,
and how it answers a job's future."""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collab.events import Event

from relay.core.mirrorstore import MirrorJob

if TYPE_CHECKING:
    from relay.core.fanout import Subscriber


@dataclass(slots=True)
class Publish:
    event: Event
    session_key: str | None
    fut: asyncio.Future[tuple[int, bool]]
    t0: float = 0.0  # perf_counter() at enqueue (the publish -> ack latency metric)


@dataclass(slots=True)
class Subscribe:
    sub: Subscriber
    since: int
    fut: asyncio.Future[None]


@dataclass(slots=True)
class Ingest:
    payload: str


@dataclass(slots=True)
class Sync:
    """Catch up from storage."""


@dataclass(slots=True)
class Recover:
    """Reload the feed: its document panicked the Yjs engine (``FeedRuntime.recover``)."""


Job = Publish | Subscribe | Ingest | Sync | Recover | MirrorJob


def wire_seq(line: str) -> int:
    """The seq of a stored record line (``{"seq":N,...}``, as this relay writes them) without
    parsing the rest; -1 if it does not look like one (the caller then parses it in full)."""
    if not line.startswith('{"seq":'):
        return -1
    end = line.find(",", 7)
    digits = line[7:end]
    return int(digits) if end > 7 and digits.isascii() and digits.isdigit() else -1


def joined_ingests(first: Ingest, jobs: deque[Job]) -> str:
    """``first``'s records with those of the :class:`Ingest` jobs queued right behind it (taken
    off ``jobs``): the worker folds and sends them as one batch."""
    payloads = [first.payload]
    while jobs and isinstance(nxt := jobs[0], Ingest):
        payloads.append(nxt.payload)
        jobs.popleft()
    return "\n".join(payloads)


def ok(fut: asyncio.Future[Any], value: Any) -> None:
    """Answer ``fut`` unless it was answered (or cancelled) already."""
    if not fut.done():
        fut.set_result(value)


def fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail ``fut`` unless it was answered (or cancelled) already."""
    if not fut.done():
        fut.set_exception(exc)


__all__ = ["Ingest", "Job", "Publish", "Recover", "Subscribe", "Sync", "fail", "joined_ingests", "ok", "wire_seq"]
