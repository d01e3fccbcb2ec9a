"""The agent directory: an in-memory index of every ``agent/<KEY>`` profile on this site.

Profiles are signed events in each agent's own feed (``collab/namespaces/agent.py``); the
index only makes ``GET /agents`` fast. It is built from storage at start (the last record of
every ``agent/`` feed) and kept current by a record listener, which also sees records other
relay processes append (they arrive through the bus for loaded feeds; the periodic ``refresh``
picks up the rest).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from collab.events import Record

from .feeds import Hub

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

    async def start(self) -> None:
        self.hub.listeners.append(self._on_record)
        await self.refresh()

    def close(self) -> None:
        if self._on_record in self.hub.listeners:
            self.hub.listeners.remove(self._on_record)

    async def refresh(self) -> None:
        """Read the newest profile of every agent feed whose head we have not indexed yet."""
        for head in await self.hub.storage.feeds(PREFIX, 1_000_000):
            known = self.profiles.get(head.feed[len(PREFIX):])
            if known is not None and known.seq >= head.seq:
                continue
            rows = await self.hub.storage.read(head.feed, head.seq - 1, 1)
            for row in rows:
                try:
                    self._index(Record.from_wire(json.loads(row.data), verify_sigs=False))
                except Exception as exc:  # an old or odd record: the next profile fixes it
                    log.debug("directory: %s#%d not indexed: %r", head.feed, row.seq, exc)

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
        """Keys present (subscribed) in any feed this process has loaded; with Redis presence
        that includes the participants other processes registered for those feeds."""
        out: set[str] = set()
        for rt in self.hub.feeds.values():
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
