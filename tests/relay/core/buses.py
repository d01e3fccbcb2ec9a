"""Two relay processes' view of one Redis site, for bus and presence tests: a storage and a
started :class:`RedisBus` each, on the session's real redis-server, under a fresh key prefix."""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from relay.core.bus import RedisBus
from relay.storage.redis import RedisStorage


@dataclass
class Process:
    storage: RedisStorage
    bus: RedisBus
    inbox: asyncio.Queue[tuple[str, str]] = field(default_factory=asyncio.Queue)
    resyncs: asyncio.Queue[None] = field(default_factory=asyncio.Queue)

    async def next(self, timeout: float = 5.0) -> tuple[str, str]:
        return await asyncio.wait_for(self.inbox.get(), timeout)


@contextlib.asynccontextmanager
async def site(url: str, n: int = 2) -> AsyncIterator[list[Process]]:
    prefix = f"bus-{uuid.uuid4().hex[:8]}"
    async with contextlib.AsyncExitStack() as stack:
        procs = []
        for _ in range(n):
            storage = RedisStorage(url, prefix)
            await stack.enter_async_context(storage)
            p = Process(storage, RedisBus(storage))

            def deliver(feed: str, payload: str, p: Process = p) -> None:
                p.inbox.put_nowait((feed, payload))

            async def resync(p: Process = p) -> None:
                p.resyncs.put_nowait(None)

            await p.bus.start(deliver, resync)
            stack.push_async_callback(p.bus.close)
            procs.append(p)
        yield procs
