"""The Yjs sandbox's part in a ``doc/`` feed's worker (``relay.core.worker.FeedRuntime``):
checking updates in the sandbox before they are stored or folded (docs/design.md, "The Yjs
sandbox"), and what a refusal or a quarantine logs, counts and raises an alarm about."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from collab.errors import InvalidEvent
from collab.events import Event, Record, unb64
from collab.namespaces.doc import DocState
from collab.sandbox import VERDICTS
from collab.sandbox_supervisor import Sandbox, Verdict

from relay.core.metrics import Metrics

log = logging.getLogger("relay.core.worker")


class Vetting:
    """One feed's checks in the sandbox (a FeedRuntime of a doc feed holds one)."""

    def __init__(self, feed: str, sandbox: Sandbox, metrics: Metrics,
                 alarm: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.feed, self.sandbox, self.metrics, self.alarm = feed, sandbox, metrics, alarm

    async def check(self, state: DocState, recs: Sequence[Record], full: bool = True) -> dict[int, Verdict]:
        """Check the doc updates of ``recs`` (in order, on ``state``) in the sandbox: the index in
        ``recs`` -> verdict of each one refused. ``full``: the child also encodes the whole
        document (before a snapshot; on load), else only what the updates change. ``EnginePanic``
        (``state`` itself cannot be encoded in-process) propagates."""
        idx = [i for i, r in enumerate(recs) if r.event.kind == "doc.update"]
        if not idx:
            return {}
        updates = [unb64(recs[i].event.body["update"]) for i in idx]
        verdicts = await self.sandbox.check(self.feed, state.tag, updates, state.state_update, full=full)
        self.metrics.sandbox_restarts.set(self.sandbox.restarts)
        return {i: v for i, v in zip(idx, verdicts, strict=True) if not v.ok}

    def refused(self, ev: Event, verdict: Verdict) -> InvalidEvent:
        """The error a publisher gets for an update the engine refused (logged and counted)."""
        name = VERDICTS.get(verdict.code, "bad")
        self.metrics.yjs_refused.inc(name)
        log.warning("yjs update refused by the sandbox (%s): feed %s event %s author %s: %s", name, self.feed,
                    ev.id, ev.author, verdict.reason)
        return InvalidEvent(f"the Yjs update was refused by the engine ({name}): event {ev.id}")

    def quarantined(self, rec: Record, verdict: Verdict) -> None:
        """A stored record left out of the fold: logged, counted, and a relay-signed alarm."""
        name = VERDICTS.get(verdict.code, "bad")
        self.metrics.yjs_refused.inc("quarantined")
        ev = rec.event
        log.error("QUARANTINE %s#%d (event %s, author %s): the Yjs engine fails on it (%s): %s", self.feed, rec.seq,
                  ev.id, ev.author, name, verdict.reason)
        if self.alarm is not None:
            self.alarm({"feed": self.feed, "seq": rec.seq, "event_id": ev.id, "author": ev.author,
                        "verdict": name, "reason": verdict.reason[:500]})


__all__ = ["Vetting"]
