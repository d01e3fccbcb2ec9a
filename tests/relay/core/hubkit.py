"""A real Hub on real SQLite storage (no sockets) and a subscriber that records its frames."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from collab.keys import Keypair
from collab.namespaces import default_registry

from relay.core.config import Config
from relay.core.hub import Hub
from relay.core.wsframe import SharedText
from relay.storage.sqlite import SqliteStorage

RELAY = Keypair.from_seed(b"R" * 32)


@asynccontextmanager
async def hub_on_sqlite(data: Path, **config: Any) -> AsyncIterator[Hub]:
    async with hubs_on_sqlite(data, 1, **config) as hubs:
        yield hubs[0]


@asynccontextmanager
async def hubs_on_sqlite(data: Path, n: int, **config: Any) -> AsyncIterator[list[Hub]]:
    """``n`` hubs sharing one store, as the processes of a site share one (they learn of each
    other's appends from the store itself: a moved head, a sweep)."""
    storage = SqliteStorage(data)
    await storage.open()
    hubs = [Hub(storage, default_registry(), RELAY, Config(data_dir=data, **config)) for _ in range(n)]
    try:
        yield hubs
    finally:
        for hub in hubs:
            await hub.close()
        await storage.close()


class Sink:
    """A Subscriber that keeps every frame it is handed, decoded, and wakes waiters."""

    reads_any = False
    records_only = False

    def __init__(self, key: str | None = None) -> None:
        self.key = key
        self.frames: list[dict[str, Any]] = []
        self.shared = 0  # batches received framed once for all
        self._changed = asyncio.Event()

    def deliver(self, frame: str) -> None:
        self.frames.append(json.loads(frame))
        self._changed.set()

    async def deliver_wait(self, frame: str) -> None:
        self.deliver(frame)

    def deliver_shared(self, shared: SharedText) -> None:
        self.shared += 1
        for part in shared.parts:
            self.deliver(part)

    def of(self, t: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["t"] == t]

    def seqs(self) -> list[int]:
        return [f["rec"]["seq"] for f in self.of("rec")]

    async def until(self, pred: Callable[[Sink], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred(self):
                self._changed.clear()
                await self._changed.wait()
