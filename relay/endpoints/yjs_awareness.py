"""The awareness states of one document on this relay, sans I/O (y-protocols' awareness rules).

The wire encoding of awareness updates is in :mod:`relay.endpoints.yjs_protocol`; this module
holds the states, their clocks and owners, and the agents' states the relay adds.
"""
from __future__ import annotations

from collections.abc import Hashable

from relay.core.limits import YjsLimits
from relay.endpoints.yjs_protocol import AwarenessEntry, parse_state

AGENT = "agent"  # owner of the awareness entries the relay makes for native agents


class AwarenessRoom:
    """The awareness states of one document on this relay, with y-protocols' rules.

    A state replaces the one held when its clock is higher; a null state with the same clock
    removes it. Each client id belongs to the connection that last set it, whose end removes
    it (a client that reconnects takes its id over before the relay noticed that the old
    connection died); the agents' ids belong to the relay and no connection can change them.
    Times are wall-clock milliseconds.
    """

    def __init__(self, limits: YjsLimits) -> None:
        self.limits = limits
        self.clocks: dict[int, int] = {}
        self.states: dict[int, str] = {}
        self.updated: dict[int, float] = {}
        self.owner: dict[int, Hashable] = {}
        self.by_owner: dict[Hashable, set[int]] = {}

    def snapshot(self) -> list[AwarenessEntry]:
        return [AwarenessEntry(c, self.clocks[c], s) for c, s in self.states.items()]

    def apply(self, conn: Hashable, entries: list[AwarenessEntry],
              now: float) -> tuple[list[AwarenessEntry], list[str]]:
        """Apply a connection's update; returns (entries to broadcast, reasons entries were refused)."""
        changed: list[AwarenessEntry] = []
        refused: list[str] = []
        mine = self.by_owner.setdefault(conn, set())
        for e in entries:
            if self.owner.get(e.client) == AGENT:
                refused.append(f"client id {e.client} is an agent's")
                continue
            if e.client not in mine and len(mine) >= self.limits.max_awareness_clients:
                refused.append(f"more than {self.limits.max_awareness_clients} awareness client ids")
                continue
            if len(e.state) > self.limits.max_awareness_state_bytes:  # chars <= bytes: checked again below
                refused.append("awareness state too large")
                continue
            if len(e.state.encode("utf-8")) > self.limits.max_awareness_state_bytes:
                refused.append("awareness state too large")
                continue
            state = parse_state(e.state)
            if isinstance(state, dict) and AGENT in state:
                refused.append(f"awareness states with a top-level {AGENT!r} member are the relay's")
                continue
            curr = self.clocks.get(e.client, 0)
            if not (curr < e.clock or (curr == e.clock and state is None and e.client in self.states)):
                continue
            self.clocks[e.client] = e.clock
            self.updated[e.client] = now
            if state is None:
                self.states.pop(e.client, None)
                self._disown(e.client)
                changed.append(AwarenessEntry(e.client, e.clock, "null"))
            else:
                self.states[e.client] = e.state
                if self.owner.get(e.client) != conn:
                    self._disown(e.client)
                    self.owner[e.client] = conn
                    mine.add(e.client)
                changed.append(e)
        return changed, refused

    def _disown(self, client: int) -> None:
        owner = self.owner.pop(client, None)
        if owner is not None:
            self.by_owner.get(owner, set()).discard(client)

    def _remove(self, client: int) -> AwarenessEntry | None:
        if self.states.pop(client, None) is None:
            return None
        self._disown(client)
        return AwarenessEntry(client, self.clocks[client], "null")

    def drop(self, conn: Hashable) -> list[AwarenessEntry]:
        """A connection ended: remove the states it controlled (and forget their clocks)."""
        out = [e for c in sorted(self.by_owner.pop(conn, set())) if (e := self._remove(c)) is not None]
        for e in out:
            self.clocks.pop(e.client, None)
            self.updated.pop(e.client, None)
        return out

    def expire(self, now: float) -> list[AwarenessEntry]:
        """Remove client states not renewed within ``awareness_timeout`` (clients renew every 15 s)."""
        cutoff = now - self.limits.awareness_timeout * 1000
        stale = [c for c, t in self.updated.items() if t <= cutoff and c in self.states and self.owner.get(c) != AGENT]
        return [e for c in stale if (e := self._remove(c)) is not None]

    # agents ----------------------------------------------------------------------------------
    def set_agent(self, client: int, state: str, now: float) -> AwarenessEntry | None:
        """Set (or renew) an agent's state; its clock follows the wall clock so that clients
        that saw an earlier room (or another relay process) still accept it. None when the
        id is taken by a client connection."""
        owner = self.owner.get(client)
        if owner is not None and owner != AGENT:
            return None
        clock = max(self.clocks.get(client, 0) + 1, int(now))
        self.clocks[client], self.states[client], self.updated[client] = clock, state, now
        self.owner[client] = AGENT
        self.by_owner.setdefault(AGENT, set()).add(client)
        return AwarenessEntry(client, clock, state)

    def remove_agent(self, client: int) -> AwarenessEntry | None:
        if self.owner.get(client) != AGENT:
            return None
        return self._remove(client)


__all__ = ["AGENT", "AwarenessRoom"]
