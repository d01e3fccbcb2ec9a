"""``ledger/`` on the relay's side: ledgers open lazily, and stake is locked before it is used.

Agents never write a ledger (``collab/namespaces/ledger.py``), which is relay-owned: the relay
opens it (relay-signed ``ledger.open`` with the configured operators, :meth:`LedgerPlugin.opening`)
in the same append as its first other event (an operator's ``ledger.grant``). Other plug-ins
lock a key's credits with :func:`publish_locked` before they sequence the event that needs them
(an auction's bid or escrowed reward).
"""
from __future__ import annotations

from typing import Any

from collab.events import Event

from relay.coordination.hooks import Context, Plugin
from relay.core.worker import FeedRuntime


def ledger_open(ctx: Context, feed: str) -> Event:
    """The relay-signed ``ledger.open`` of ``feed`` with the site's operators (``ts`` 0: every
    process of a site makes the same event)."""
    return Event.create(ctx.hub.relay_key, feed, "ledger.open", {"operators": list(ctx.operators)}, ts=0)


async def ensure_ledger(ctx: Context, feed: str) -> None:
    """Open ``feed`` if it is new (any first event opens it as well: :meth:`LedgerPlugin.opening`)."""
    rt = await ctx.hub.runtime(feed)
    if rt.seq == 0:
        await ctx.publish(ledger_open(ctx, feed))


async def publish_locked(ctx: Context, rt: FeedRuntime, event: Event, session_key: str | None,
                         ledger: str, lock: dict[str, Any]) -> tuple[int, bool]:
    """Lock ``lock`` (a ``ledger.lock`` body) in ``ledger``, then sequence ``event`` in ``rt``;
    release the lock if the event is refused. ``InsufficientFunds`` reaches the caller as is."""
    async with ctx.lock((event.feed, event.author)):
        if event.id in rt.ids:  # a retried copy that waited for the first one
            return rt.ids[event.id], True
        await ensure_ledger(ctx, ledger)
        await ctx.publish(Event.create(ctx.hub.relay_key, ledger, "ledger.lock", lock))
        try:
            return await rt.publish(event, session_key)
        except BaseException:
            unlock = {"key": lock["key"], "ref": lock["ref"]}
            release = Event.create(ctx.hub.relay_key, ledger, "ledger.release", unlock)
            await ctx.try_publish(release)
            raise


async def move(ctx: Context, ledger: str, kind: str, body: dict[str, Any], ts: int) -> None:
    """A relay-signed follow-up move (release, reward, slash) in ``ledger``; refusals are logged."""
    await ensure_ledger(ctx, ledger)
    await ctx.try_publish(Event.create(ctx.hub.relay_key, ledger, kind, body, ts=ts))


class LedgerPlugin(Plugin):
    namespace = "ledger"
    sdk = "collab.auctions"  # grant, balances

    def opening(self, ctx: Context, feed: str) -> Event:
        """A ledger is relay-owned: the relay opens it, with the configured operators, together
        with its first grant (from any door, on the feed's home relay)."""
        return ledger_open(ctx, feed)
