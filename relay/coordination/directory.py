"""The agent directory: an in-memory index of every ``agent/<KEY>`` profile on this site.

Profiles are signed events in each agent's own feed (``collab/namespaces/agent.py``); the
index only makes ``GET /agents`` fast. It is built from storage at start (the last record of
every ``agent/`` feed) and kept current by a record listener, which also sees records other
relay processes append to feeds this process has loaded (they arrive through the bus).

With a shared backend (several processes of one site) a profile published on another process
to a feed this one never loaded reaches no listener here, so a background task re-reads the
heads of the ``agent/`` feeds every ``sync_interval`` and indexes the new ones; ``lookup``
also reads a single key's feed on a miss. The same task reads the shared presence of every
``agent/<KEY>`` feed, so an agent that follows its own feed on another process (what
``collab.directory.register`` does) is online here too.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from collab.events import HEX64_RE, Record

from relay.core.hub import Hub

log = logging.getLogger(__name__)

PREFIX = "agent/"


@dataclass(frozen=True, slots=True)
class Profile:
    key: str
    name: str
    description: str
    capabilities: tuple[str, ...]
    updated: int
    seq: int

    def to_json(self, online: bool) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "description": self.description,
                "capabilities": list(self.capabilities), "updated": self.updated, "online": online}


class Directory:
    """Profiles by key, with a capability index; answers queries without touching storage."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.profiles: dict[str, Profile] = {}
        self._by_cap: dict[str, set[str]] = {}
        self._remote_online: frozenset[str] = frozenset()  # shared backend: present on any process
        self._task: asyncio.Task[None] | None = None
        self._read: dict[str, int] = {}  # feed -> the head seq last read by refresh/lookup

    @property
    def shared(self) -> bool:
        """Other relay processes may append to this site's feeds (a shared backend)."""
        return self.hub.bus.name != "local"

    async def start(self) -> None:
        self.hub.listeners.append(self._on_record)
        await self.refresh()
        if self.shared:
            await self._refresh_presence_quietly()
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="directory-refresh")

    async def close(self) -> None:
        if self._on_record in self.hub.listeners:
            self.hub.listeners.remove(self._on_record)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # ended, not just told to end

    async def _poll(self) -> None:
        """Shared backend: pick up profiles and presence other processes wrote."""
        interval = max(0.05, min(self.hub.config.sync_interval, self.hub.config.presence_ttl / 3))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception as exc:  # storage down: try again next time
                log.debug("directory refresh failed: %r", exc, exc_info=True)
            await self._refresh_presence_quietly()

    async def _refresh_presence_quietly(self) -> None:
        try:
            self._remote_online = frozenset(await self._shared_presence())
        except Exception as exc:
            log.debug("directory presence refresh failed: %r", exc, exc_info=True)

    async def _shared_presence(self) -> set[str]:
        """Keys with a live participant entry (any process) in some ``agent/<KEY>`` feed."""
        if not self.hub.presence.shared:
            return set()
        return await self.hub.presence.present_in([PREFIX + k for k in self.profiles])

    async def lookup(self, key: str) -> Profile | None:
        """The profile of ``key``; on a miss with a shared backend, read its feed from storage
        (another process may have stored it since the last refresh)."""
        prof = self.profiles.get(key)
        if prof is not None or not self.shared or not HEX64_RE.match(key):
            return prof
        feed = PREFIX + key
        head = await self.hub.storage.head(feed)
        if head is not None and head.seq > 0:
            await self._read_latest(feed, head.seq)
        return self.profiles.get(key)

    async def refresh(self) -> None:
        """Read the newest profile of every agent feed whose head we have not indexed yet."""
        for head in await self.hub.storage.feeds(PREFIX, 1_000_000):
            known = self.profiles.get(head.feed[len(PREFIX):])
            if (known is not None and known.seq >= head.seq) or self._read.get(head.feed, 0) >= head.seq:
                continue
            await self._read_latest(head.feed, head.seq)

    async def _read_latest(self, feed: str, seq: int) -> None:
        rows = await self.hub.storage.read(feed, seq - 1, 1)
        self._read[feed] = seq  # an unreadable record is not read again every refresh
        for row in rows:
            try:
                self._index(Record.from_wire(json.loads(row.data), verify_sigs=False))
            except Exception as exc:  # an old or odd record: the next profile fixes it
                log.debug("directory: %s#%d not indexed: %r", feed, row.seq, exc, exc_info=True)

    def _on_record(self, rec: Record, _rjson: str) -> None:
        if rec.event.feed.startswith(PREFIX):
            self._index(rec)

    def _index(self, rec: Record) -> None:
        ev = rec.event
        if ev.kind != "agent.profile" or not isinstance(ev.body, dict):
            return
        key = ev.feed[len(PREFIX):]
        if ev.author != key:
            return
        old = self.profiles.get(key)
        if old is not None and old.seq >= rec.seq:
            return
        caps = tuple(c for c in ev.body.get("capabilities", ()) if isinstance(c, str))
        prof = Profile(key, str(ev.body.get("name", "")), str(ev.body.get("description", "")), caps,
                       rec.rtime, rec.seq)
        if old is not None:
            for c in old.capabilities:
                self._by_cap.get(c.lower(), set()).discard(key)
        for c in caps:
            self._by_cap.setdefault(c.lower(), set()).add(key)
        self.profiles[key] = prof

    def online_keys(self) -> set[str]:
        """Keys present (subscribed) in any feed anyone may read that this process has loaded;
        with Redis presence that includes the participants other processes registered for those
        feeds, and the participants of every ``agent/`` feed on any process (as of the last
        refresh). Presence in a ``members`` feed is for its readers only: an agent connected
        only to private feeds is not shown online to the world."""
        out: set[str] = set(self._remote_online)
        for rt in self.hub.feeds.values():
            if rt.access.policy != "members":
                out.update(rt.present)
        return out

    def query(self, capability: str | None = None, text: str | None = None, online: bool | None = None,
              limit: int = 100, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """(total matches, one page of profiles), sorted by name then key."""
        keys: set[str] | None = None
        if capability:
            keys = set(self._by_cap.get(capability.lower(), ()))
        pool = (self.profiles[k] for k in keys) if keys is not None else iter(self.profiles.values())
        present = self.online_keys()
        needle = text.lower() if text else None
        hits = []
        for p in pool:
            if needle and needle not in p.name.lower() and needle not in p.description.lower():
                continue
            is_online = p.key in present
            if online is not None and is_online != online:
                continue
            hits.append((p, is_online))
        hits.sort(key=lambda h: (h[0].name.lower(), h[0].key))
        return len(hits), [p.to_json(o) for p, o in hits[offset:offset + limit]]
