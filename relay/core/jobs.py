"""The jobs a feed's worker (``relay.core.worker.FeedRuntime``) takes from its queue, in order,
and how it answers a job's future."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collab.errors import BadSignature
from collab.events import BAD_SIGNATURE, Event

from relay.core.mirrorstore import MirrorJob

if TYPE_CHECKING:
    from relay.core.fanout import Subscriber


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


def ok(fut: asyncio.Future[Any], value: Any) -> None:
    """Answer ``fut`` unless it was answered (or cancelled) already."""
    if not fut.done():
        fut.set_result(value)


def fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail ``fut`` unless it was answered (or cancelled) already."""
    if not fut.done():
        fut.set_exception(exc)




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


__all__ = ["Ingest", "Job", "Publish", "Recover", "Subscribe", "Sync", "fail", "ok", "signature_checked", "wire_seq"]
