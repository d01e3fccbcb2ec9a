"""Lease actions of :class:`collab.agent.Agent` (docs/coordination.md, "Leases"): campaign (the
Agent then renews the lease in the background while it lives, once granted), status, resign,
and a watch of the lease's changes, over :class:`collab.lease.Lease`."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..errors import Conflict, InvalidEvent
from ..events import Record, check_feed, namespace_of, now_ms
from ..lease import Lease
from ..namespaces.lease import DEFAULT_TTL_MS, LeaseState
from .core import AgentCore, _bound, ack_json


def _lease_feed(feed: str) -> str:
    if namespace_of(check_feed(feed)) != "lease":
        raise InvalidEvent(f"expected a lease/ feed, not {feed!r}")
    return feed


def lease_line(rec: Record) -> str:
    """One line per lease record, for ``colony lease watch``."""
    ev, b = rec.event, rec.event.body if isinstance(rec.event.body, dict) else {}
    who = b.get("holder") or ev.author
    extra = f" epoch {b['epoch']}" if "epoch" in b else ""
    return f"#{rec.seq} {ev.kind.removeprefix('lease.')} {who[:16]}{extra}"


class LeaseActions(AgentCore):
    @contextlib.asynccontextmanager
    async def _view(self, feed: str) -> AsyncIterator[Lease]:
        """A synced view of the lease that does not campaign (``async with Lease`` would)."""
        view = Lease(self.client, feed)
        await view.start()
        try:
            await view.wait_synced(self.timeout)
            yield view
        finally:
            await view.close()

    def _held(self) -> dict[str, tuple[Lease, asyncio.Task[int]]]:
        held: dict[str, tuple[Lease, asyncio.Task[int]]] = self.__dict__.setdefault("_leases", {})
        return held

    async def lease_campaign(self, feed: str, priority: int = 0, ttl_ms: int = DEFAULT_TTL_MS,
                             wait_s: float = 0.0, hold: bool = True) -> dict[str, Any]:
        """Join the candidates of ``feed``. ``hold``: once the relay grants this key the lease, this
        Agent renews it every TTL/3 while it lives and resigns (or withdraws) when it closes; without
        it the candidacy stays when the Agent closes (a lease granted then runs out after its TTL
        unless this key renews). ``wait_s`` > 0: wait up to that long for the grant. Returns
        :meth:`lease_status`."""
        _bound("priority", priority, 0, 1_000_000)
        _bound("wait_s", int(wait_s), 0, 3600)
        held = self._held()
        if _lease_feed(feed) in held or hold:
            if feed not in held:
                lease = Lease(self.client, feed, priority=priority, ttl_ms=ttl_ms)
                await lease.start()
                await lease.wait_synced(self.timeout)
                await self._join(lease, priority, ttl_ms)
                held[feed] = (lease, asyncio.ensure_future(lease.acquire(None)))
            lease, task = held[feed]
            if wait_s > 0 and not task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), wait_s)
            return await self.lease_status(feed)
        async with self.lock(feed), self._view(feed) as view:
            await self._join(view, priority, ttl_ms)
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await view.wait_for(lambda s: s.holder == self.me, wait_s)
            return self._lease_view(view.state, None)

    async def _join(self, lease: Lease, priority: int, ttl_ms: int) -> None:
        st = lease.state
        if st.holder != self.me and all(c.key != self.me for c in st.candidates):
            lease.priority, lease.ttl_ms = priority, ttl_ms
            await lease.campaign()

    async def lease_hold(self, feed: str, granted: Callable[[int], Any] | None = None) -> dict[str, Any]:
        """For a lease this Agent campaigned for: wait for the grant (``granted(epoch)``), then keep
        it (renewing) until it is lost; returns :meth:`lease_status`."""
        held = self._held().get(_lease_feed(feed))
        if held is None:
            raise Conflict(f"this Agent has not campaigned for {feed}")
        lease, task = held
        epoch = await asyncio.shield(task)
        if granted is not None:
            granted(epoch)
        await lease.lost.wait()
        return await self.lease_status(feed)

    async def lease_status(self, feed: str) -> dict[str, Any]:
        """The lease folded from its verified records: ``holder``, ``epoch``, ``time_left_ms`` (by
        the relay's deadline and this machine's clock), ``standby`` (grant order), ``history``;
        ``holding`` (this key holds it) and ``fence`` (to put in fenced writes) when it does."""
        held = self._held().get(_lease_feed(feed))
        if held is not None:
            st = held[0].state
        else:
            async with self.lock(feed), self._view(feed) as view:
                st = view.state
        return self._lease_view(st, held[0] if held else None)

    def _lease_view(self, st: LeaseState, lease: Lease | None) -> dict[str, Any]:
        from ..namespaces.lease import LeaseNamespace

        view: dict[str, Any] = LeaseNamespace().view(st)
        view["time_left_ms"] = max(0, st.deadline - now_ms()) if st.holder else None
        view["holding"] = bool(st.holder) and st.holder == self.me and (lease is None or not lease.lost.is_set())
        view["fence"] = {"lease": st.feed, "epoch": st.epoch} if view["holding"] else None
        return view

    async def lease_resign(self, feed: str) -> dict[str, Any]:
        """Resign the lease if this key holds it, else withdraw this key's candidacy."""
        held = self._held().pop(_lease_feed(feed), None)
        if held is not None:
            lease, task = held
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await lease.close()
        async with self.lock(feed), self._view(feed) as view:
            st = view.state
            if st.holder == self.me:
                view.epoch = st.epoch
                return ack_json(await view.resign(), feed)
            if any(c.key == self.me for c in st.candidates):
                return ack_json(await view.withdraw(), feed)
        raise Conflict(f"this key neither holds {feed} nor is a candidate")

    async def lease_watch(self, feed: str, show: Callable[[Record], Any], count: int | None = None,
                          renewals: bool = False, ready: Callable[[int], Any] | None = None) -> dict[str, Any]:
        """Call ``show(record)`` for each record of the lease from now on (renewals only if
        ``renewals``; ``count``: stop after that many shown); ``ready(seq)`` once following.
        Returns the status at the end."""
        if count is not None:
            _bound("count", count, 1, 1_000_000)
        seen = asyncio.Event()
        n = 0
        async with self._view(_lease_feed(feed)) as view:
            start = view.seq

            def on(rec: Record, _b: LeaseState, _a: LeaseState) -> None:
                nonlocal n
                if rec.seq > start and (renewals or rec.event.kind != "lease.renew"):
                    show(rec)
                    n += 1
                    seen.set()

            view.listeners.append(on)
            if ready is not None:
                ready(start)
            while count is None or n < count:
                seen.clear()
                await seen.wait()
            return self._lease_view(view.state, None)

    async def close_leases(self) -> None:
        """Stop renewing and resign every lease this Agent campaigned for (``aclose`` calls it)."""
        held = self._held()
        items = list(held.values())
        held.clear()
        for lease, task in items:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(Exception):
                await lease.release()
                await lease.close()
