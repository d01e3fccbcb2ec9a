"""Watching feed-id prefixes: an announcement of every new record (docs/protocol.md 9.4).

:class:`Watches` is one relay process's watchers (native connections and ``GET /watch``
streams) indexed by prefix. It is a record listener of the hub (``Hub.listeners``): called with
every record committed on this process, right after it is folded, so the feed's access then is
the access under which the record is read (a revoke binds from the record that makes it).

* One process (the local bus): the listener announces to the local watchers directly.
* A Redis site: a watcher must hear of records appended by any process, to feeds its own process
  never loaded (a brand-new feed included). The process that *appended* a record (the storage's
  ``last_append``; commits of records other processes appended are skipped) publishes its
  announcement on one site-wide bus channel, the pseudo-feed :data:`WATCH_FEED`, with the
  feed's readers when it is ``members`` (so every process judges access without loading the
  feed). Announcements of one event-loop turn go out as one message, by one flusher task in
  order, never awaited by a publish: no round trip on the ack path. Every process that has a
  watcher subscribes to the channel (once, on its first watch) and announces what it receives
  to its own watchers, the appending process included. Pub/sub is at-most-once: an
  announcement lost with a Redis connection is not repeated (the feed's records are not).

Each watcher gets a record once however many of its prefixes match, and only if its key may
read the feed (``members``: the owner and readers; ``dm/``: its two keys).
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection
from typing import Protocol

from collab.access import Access
from collab.errors import LimitExceeded
from collab.events import Record, check_prefix

from relay.core.bus import Bus

log = logging.getLogger(__name__)

WATCH_FEED = "~watch"  # the bus pseudo-feed of a site's announcements ("~": never a feed id)
MAX_PENDING = 10_000   # announcements waiting for the flusher; older ones are dropped past it


class Watcher(Protocol):
    """A connection that watches: its key (None: anonymous) and how it takes an announcement."""

    @property
    def key(self) -> str | None: ...

    def announce(self, body: str) -> None:
        """Queue an announcement without waiting; ``body`` is the JSON object
        ``{"feed","seq","head","kind","rtime"}`` (a slow watcher cuts itself off)."""


def announcement(rec: Record) -> str:
    """The announcement of ``rec`` (the members of docs/protocol.md 9.4, in that order)."""
    return json.dumps({"feed": rec.event.feed, "seq": rec.seq, "head": rec.hash, "kind": rec.event.kind,
                       "rtime": rec.rtime}, separators=(",", ":"))


def readers_of(access: Access | None) -> frozenset[str] | None:
    """Who may read a feed under ``access``: None for anyone (not ``members``); nobody when the
    access is not known (the feed is not loaded: privacy first)."""
    if access is None:
        return frozenset()
    if access.policy != "members":
        return None
    return access.readers | {access.owner} if access.owner is not None else access.readers


class Watches:
    """This process's watchers by prefix, and the site's announcement channel."""

    def __init__(self, bus: Bus, access_of: Callable[[str], Access | None],
                 last_append: Callable[[], tuple[str, int] | None]) -> None:
        self.bus = bus
        self._access_of = access_of      # a loaded feed's access (the hub's runtimes)
        self._last_append = last_append  # (feed, seq) of this process's last append (a Redis site)
        self.by_prefix: dict[str, set[Watcher]] = {}
        self.of: dict[Watcher, set[str]] = {}
        self._lengths: list[int] = []    # the distinct prefix lengths watched, ascending
        self._listening: asyncio.Future[None] | None = None
        self._pending: list[str] = []
        self._flusher: asyncio.Task[None] | None = None
        self.dropped = 0                 # announcements not published (Redis too slow)

    @property
    def site(self) -> bool:
        """Several processes share a bus: announcements travel over it."""
        return self.bus.name != "local"

    # -- watchers ----------------------------------------------------------------------------
    async def add(self, w: Watcher, prefix: str, limit: int) -> None:
        """Watch ``prefix`` for ``w`` (again: nothing changes); at most ``limit`` prefixes per
        watcher (``limit_exceeded``). Returns once announcements of it are delivered."""
        check_prefix(prefix)
        mine = self.of.get(w, set())
        if prefix not in mine and len(mine) >= limit:
            raise LimitExceeded(f"at most {limit} watches per connection (max_watches)")
        if self.site:
            await self._listen()
        self.of.setdefault(w, set()).add(prefix)
        self.by_prefix.setdefault(prefix, set()).add(w)
        self._lengths = sorted({len(p) for p in self.by_prefix})

    def remove(self, w: Watcher, prefix: str) -> None:
        mine = self.of.get(w)
        if mine is None or prefix not in mine:
            return
        mine.discard(prefix)
        if not mine:
            del self.of[w]
        ws = self.by_prefix[prefix]
        ws.discard(w)
        if not ws:
            del self.by_prefix[prefix]
            self._lengths = sorted({len(p) for p in self.by_prefix})

    def remove_all(self, w: Watcher) -> None:
        for prefix in list(self.of.get(w, ())):
            self.remove(w, prefix)

    async def _listen(self) -> None:
        """Subscribe to the site's announcements (once, on this process's first watch)."""
        fut = self._listening
        if fut is None or (fut.done() and (fut.cancelled() or fut.exception() is not None)):
            fut = self._listening = asyncio.ensure_future(self.bus.watch(WATCH_FEED))  # (again, if that failed)
        await asyncio.shield(fut)

    # -- records -----------------------------------------------------------------------------
    def on_record(self, rec: Record, line: str) -> None:
        """The hub's record listener (every record committed on this process)."""
        feed = rec.event.feed
        if not self.site:
            if self._lengths:
                self.deliver(feed, announcement(rec), readers_of(self._access_of(feed)))
            return
        own = self._last_append()
        if own is None or own[0] != feed or rec.seq > own[1]:
            return  # appended by another process (it announces), or a record mirrored from storage
        readers = readers_of(self._access_of(feed))
        body = announcement(rec)
        self._pending.append(body if readers is None else body[:-1] + ',"r":' + json.dumps(sorted(readers)) + "}")
        if len(self._pending) > MAX_PENDING:
            self.dropped += len(self._pending) - MAX_PENDING
            del self._pending[:-MAX_PENDING]
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="watch-announcements")

    async def _flush(self) -> None:
        """Publish what is pending, one message per round, in commit order."""
        await asyncio.sleep(0)  # the rest of this loop turn's commits go in the same message
        while self._pending:
            lines, self._pending = self._pending, []
            try:
                await self.bus.publish(WATCH_FEED, "\n".join(lines))
            except Exception:  # the bus logs and swallows Redis trouble; this is a bug
                log.exception("publishing %d announcements failed", len(lines))

    def received(self, payload: str) -> None:
        """Announcements from the site's channel (any process's, ours included)."""
        if not self._lengths:
            return
        for line in payload.split("\n"):
            try:
                d = json.loads(line)
                readers = d.pop("r", None)
                feed = d["feed"]
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring a malformed announcement on the bus")
                continue
            self.deliver(feed, json.dumps(d, separators=(",", ":")),
                         None if readers is None else frozenset(readers))

    def deliver(self, feed: str, body: str, readers: Collection[str] | None) -> int:
        """Hand ``body`` to every watcher of a prefix of ``feed`` that may read it, once each."""
        seen: set[Watcher] = set()
        by_prefix = self.by_prefix
        for n in self._lengths:
            if n > len(feed):
                break
            for w in by_prefix.get(feed[:n], ()):
                if w not in seen:
                    seen.add(w)
                    if readers is None or w.key in readers:
                        w.announce(body)
        return len(seen)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            try:
                await asyncio.wait_for(self._flusher, 2.0)
            except Exception:
                log.debug("announcements not flushed at shutdown", exc_info=True)


__all__ = ["WATCH_FEED", "Watcher", "Watches", "announcement", "readers_of"]
