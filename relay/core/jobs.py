"""The jobs a feed's worker (``relay.core.worker.FeedRuntime``) takes from its queue, in order,
and how it answers a job's future."""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collab.errors import BadSignature, RateLimited
from collab.events import BAD_SIGNATURE, Event

from relay.core.limits import TokenBucket
from relay.core.mirrorstore import MirrorJob

if TYPE_CHECKING:
    from relay.core.fanout import Subscriber


Check = asyncio.Future[bool]  # a publish's signature check while under way (relay.core.verifier)
Answer = asyncio.Future[tuple[int, bool]]  # a publish's answer: its seq, and whether it was stored already


@dataclass(slots=True)
class Publish:
    event: Event
    session_key: str | None
    fut: asyncio.Future[tuple[int, bool]]
    t0: float = 0.0  # perf_counter() at enqueue (the publish -> ack latency metric)
    check: asyncio.Future[bool] | None = None  # its signature check, when still under way (relay.core.verifier)


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


def within_rate(batch: list[Publish], rate: TokenBucket, me: str, feed: str) -> list[Publish]:
    """The publishes the feed's ``rate`` lets through (``events_per_sec_feed``; the relay's own
    events, by ``me``, always pass); the others are refused ``rate_limited``."""
    passed = []
    for p in batch:
        if p.event.author == me or rate.take():
            passed.append(p)
        else:
            fail(p.fut, RateLimited(f"too many events to {feed} (events_per_sec_feed); slow down"))
    return passed


async def checked_then(check: asyncio.Future[bool], call: Callable[..., Awaitable[tuple[int, bool]]],
                       *args: Any) -> tuple[int, bool]:
    """``call(*args)``'s answer once the signature ``check`` passed; ``bad_signature`` otherwise."""
    if not await check:
        raise BadSignature(BAD_SIGNATURE)
    return await call(*args)


async def signature_checked(batch: list[Publish]) -> list[Publish]:
    """The publishes of ``batch`` whose signature checks pass, once they are done (most are by
    the time their batch comes up); the others are refused ``bad_signature``."""
    passed = []
    for p in batch:
        if p.check is not None and not await p.check:
            fail(p.fut, BadSignature(BAD_SIGNATURE))
        else:
            passed.append(p)
    return passed


__all__ = ["Answer", "Check", "Ingest", "Job", "Publish", "Recover", "Subscribe", "Sync", "checked_then", "fail",
           "joined_ingests", "ok", "signature_checked", "wire_seq", "within_rate"]
