"""Leader election from an agent's side (docs/coordination.md, "Leases").

    async with Lease(client, "lease/coordinator", ttl_ms=3000) as lead:
        await client.publish("task/t1", "task.spawn", lead.fenced({...}))
        await lead.lost.wait()          # set when leadership is lost

Entering campaigns, waits until the relay grants this key the lease, then renews in the
background every third of the TTL; leaving resigns (or withdraws a candidacy). ``lost`` is set
when the relay refuses a renewal, the lease's state shows another holder or none, or the TTL
measured from the *sending* of the last acknowledged renewal ends without a newer ack: past that
instant the holder may assume nothing (the relay may have expired it and granted the next one).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from .errors import ColonyError
from .feedview import FeedView
from .namespaces.lease import DEFAULT_TTL_MS, LeaseNamespace, LeaseState

if TYPE_CHECKING:
    from .client import Client
    from .protocol import Ack

log = logging.getLogger(__name__)


class Lease(FeedView[LeaseState]):
    """A campaign for ``lease/<name>``; ``epoch`` and :meth:`fenced` while this key holds it."""

    def __init__(self, client: Client, feed: str, *, priority: int = 0, ttl_ms: int = DEFAULT_TTL_MS,
                 renew_every_ms: int | None = None) -> None:
        super().__init__(client, feed, LeaseNamespace())
        self.priority, self.ttl_ms = priority, ttl_ms
        self.renew_every = (renew_every_ms if renew_every_ms is not None else ttl_ms // 3) / 1000
        self.epoch = 0
        self.valid_until = 0.0  # time.monotonic() until which this key may act as the holder
        self.lost = asyncio.Event()
        self._renewer: asyncio.Task[None] | None = None

    @property
    def me(self) -> str:
        return self.client.key.public_hex if self.client.key else ""

    # -- the whole cycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Lease:
        await self.start()
        await self.wait_synced(30)
        st = self.state
        if st.holder != self.me and all(c.key != self.me for c in st.candidates):
            await self.campaign()
        await self.acquire(None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
        await self.close()

    async def acquire(self, timeout: float | None = None) -> int:
        """Wait for the grant, renew once (its ack starts the holder's own clock), start renewing
        in the background; return the epoch."""
        st = await self.wait_for(lambda s: s.holder == self.me, timeout)
        self.epoch = st.epoch
        self.lost.clear()
        await self.renew()
        self._renewer = asyncio.get_running_loop().create_task(self._renew_loop(), name=f"renew:{self.feed}")
        self.listeners.append(self._watch)
        return self.epoch

    async def release(self) -> None:
        """Stop renewing; resign if holding, withdraw if still a candidate (refusals are ignored:
        the lease may be gone already)."""
        await self._stop()
        st = self.state
        with contextlib.suppress(ColonyError):
            if st.holder == self.me and not self.lost.is_set():
                await self.resign()
            elif any(c.key == self.me for c in st.candidates):
                await self.withdraw()

    # -- events -------------------------------------------------------------------------------
    async def campaign(self) -> Ack:
        body: dict[str, Any] = {"ttl_ms": self.ttl_ms}
        if self.priority:
            body["priority"] = self.priority
        return await self.client.publish(self.feed, "lease.campaign", body)

    async def withdraw(self) -> Ack:
        return await self.client.publish(self.feed, "lease.withdraw", {})

    async def renew(self) -> Ack:
        sent = time.monotonic()
        try:
            ack = await self.client.publish(self.feed, "lease.renew", {"epoch": self.epoch})
        except ColonyError:
            self._lose("renewal refused")
            raise
        self.valid_until = max(self.valid_until, sent + self.ttl_ms / 1000)
        return ack

    async def resign(self) -> Ack:
        ack = await self.client.publish(self.feed, "lease.resign", {"epoch": self.epoch})
        self._lose("resigned")
        return ack

    # -- fencing ------------------------------------------------------------------------------
    @property
    def fence(self) -> dict[str, Any]:
        return {"lease": self.feed, "epoch": self.epoch}

    def fenced(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with this holder's fence: the relay refuses it (``stale_epoch``) once this key
        no longer holds the lease at this epoch."""
        return {**body, "fence": self.fence}

    @property
    def is_leader(self) -> bool:
        """Holder by the verified fold, not lost, and within the TTL of the last acked renewal."""
        return (not self.lost.is_set() and self.state.holder == self.me and self.state.epoch == self.epoch
                and time.monotonic() < self.valid_until)

    # -- background ---------------------------------------------------------------------------
    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            log.info("leadership of %s (epoch %d) lost: %s", self.feed, self.epoch, why)
            self.lost.set()

    def _watch(self, _rec: Any, _before: LeaseState, after: LeaseState) -> None:
        if self.epoch and (after.holder != self.me or after.epoch != self.epoch):
            self._lose(f"the lease shows epoch {after.epoch} held by {after.holder}")

    async def _renew_loop(self) -> None:
        while not self.lost.is_set():
            wait = min(self.renew_every, max(0.0, self.valid_until - time.monotonic()))
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for can drop a cancel (3.11)
                async with asyncio.timeout(wait):
                    await self.lost.wait()  # the renewal cadence, or the loss
            if self.lost.is_set():
                return
            if time.monotonic() >= self.valid_until:
                self._lose("the TTL since the last acked renewal ended")
                return
            try:
                async with asyncio.timeout(max(0.01, self.valid_until - time.monotonic())):
                    await self.renew()
            except ColonyError:
                return  # renew() marked the loss
            except TimeoutError:
                self._lose("no renewal acked before the TTL ended")
                return

    async def _stop(self) -> None:
        if self._watch in self.listeners:
            self.listeners.remove(self._watch)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None

    async def close(self) -> None:
        await self._stop()
        await super().close()
