"""Fenced publishes: an event whose body carries ``fence: {lease, epoch}`` is admitted only while
its author holds that lease at that epoch (docs/coordination.md, "Leases"; protocol 16.4).

The check runs where the fenced feed is sequenced (``Hub.publish`` hands fenced events here
after any federation forward), against the lease feed's state **on this relay**:

* the lease must be homed here (a federation pins ``lease/*`` with the feeds it fences): the
  state of a mirrored lease may lag its home, so a fence naming one is refused ``stale_epoch``;
* on a Redis site the lease feed's runtime is first caught up with the stored head, so a grant
  or expiry another process appended is seen;
* the holder, the epoch and the deadline are checked on the relay's clock (a holder paused
  past its deadline is refused even before the expiry timer has written ``lease.expired``);
* the check and the event's append hold the lease's lock, which the lease's expiry timer
  takes too, so on this process no expiry lands between the check and the append.
"""
from __future__ import annotations

import asyncio
import time

from collab.errors import StaleEpoch, Unavailable
from collab.events import Event, now_ms
from collab.namespaces.lease import check_fence, fence_of

from relay.coordination.hooks import Context
from relay.core.worker import FeedRuntime

#: how long a fence check waits for this process to catch up with a lease feed's stored head
CATCH_UP_S = 2.0


def lease_lock(ctx: Context, lease: str) -> asyncio.Lock:
    return ctx.lock(("lease", lease))


async def current(ctx: Context, lease: str) -> FeedRuntime:
    """The lease feed's runtime, caught up with its stored head (another process may have appended)."""
    rt = await ctx.hub.runtime(lease)
    head = await ctx.hub.storage.head(lease)
    if head is None or head.seq <= rt.seq:
        return rt
    rt.request_sync()
    end = time.monotonic() + CATCH_UP_S
    while rt.seq < head.seq:
        if time.monotonic() > end:
            raise Unavailable(f"{lease} could not be caught up to check a fence; retry")
        await asyncio.sleep(0.005)
    return rt


async def publish_fenced(ctx: Context, event: Event, session_key: str | None) -> tuple[int, bool]:
    """Check ``event``'s fence, then gate or sequence it (``Hub.publish_here``) under the lease's lock."""
    fence = fence_of(event)
    if fence is None:
        return await ctx.hub.publish_here(event, session_key)
    lease, epoch = fence
    if not ctx.hub.routing.is_home(lease):
        raise StaleEpoch(f"{lease} is homed on another relay: a fence is checked where its lease is homed")
    async with lease_lock(ctx, lease):
        rt = await current(ctx, lease)
        if event.id in (await ctx.hub.runtime(event.feed)).ids:
            return await ctx.hub.publish_here(event, session_key)  # a duplicate answers as one
        check_fence(rt.state, event.author, epoch, now_ms())
        return await ctx.hub.publish_here(event, session_key)
