"""``lease/`` on the relay's side: grant the next candidate whenever the lease is free, expire a
holder whose deadline passed (``collab/namespaces/lease.py`` says what is admissible).

Both are relay-signed events with deterministic ids: a grant's ``ts`` is the ``rtime`` of the
record that freed the lease (or brought the first candidate), an expiry's ``ts`` is the
deadline, and their bodies are functions of the state. Every process of a Redis site that
holds the feed arms the same timer and makes the same event; the first append wins and the
others get a duplicate answer (or, with keys of their own, a refusal: the state moved on), so
each grant and expiry is stored once. A process that loads the feed (its clients failed over
to it, say, from a process that died) arms the expiry from the loaded state and makes a grant
the state owes (``on_load``), so the lease moves even when every process that held it is gone.
Under federation only the lease's home relay runs them (the coordinator follows home feeds only).
"""
from __future__ import annotations

import json
from typing import Any

from collab.events import Event, Record, now_ms
from collab.namespaces.lease import expiry, next_grant

from relay.coordination.fence import lease_lock
from relay.coordination.hooks import Context, Plugin
from relay.core.worker import FeedRuntime

EXPIRE = "expire"


class LeasePlugin(Plugin):
    namespace = "lease"
    follows = True
    # a grant owed when the relay stopped is made when it loads the feed on start (on_load)
    sdk = "collab.lease"

    async def on_commit(self, ctx: Context, rec: Record, before: Any, after: Any) -> None:
        if after.seq != rec.seq:
            return  # the state has moved on already: the later record's follow-up decides
        body = next_grant(after)
        if body is not None:
            await ctx.try_publish(Event.create(ctx.hub.relay_key, rec.feed, "lease.granted", body, ts=rec.rtime))

    async def on_load(self, ctx: Context, rt: FeedRuntime) -> None:
        body = next_grant(rt.state)
        if body is None:
            return
        rows = await ctx.hub.storage.read(rt.feed, rt.seq - 1, 1)  # the record that left it owed
        ts = Record.from_wire(json.loads(rows[0].data), verify_sigs=False).rtime if rows else now_ms()
        await ctx.try_publish(Event.create(ctx.hub.relay_key, rt.feed, "lease.granted", body, ts=ts))

    def timers(self, state: Any) -> list[tuple[int, str]]:
        due = expiry(state)
        return [(due[0], EXPIRE)] if due is not None else []

    async def on_timer(self, ctx: Context, rt: FeedRuntime, deadline: int, what: str) -> Event | None:
        if what != EXPIRE:
            return None
        async with lease_lock(ctx, rt.feed):  # no fenced write between its check and append meanwhile
            due = expiry(rt.state)
            if due is None or due[0] != deadline:
                return None  # renewed or released since the timer was armed
            await ctx.try_publish(Event.create(ctx.hub.relay_key, rt.feed, "lease.expired", due[1], ts=deadline))
        return None
