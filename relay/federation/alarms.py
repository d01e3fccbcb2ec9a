"""Alarms: what a relay does when a peer shows it something it must not accept.

Every alarm is a log line at error level, one more in ``count`` (``GET /health``), and a
relay-signed ``alarm.<kind>`` event in the relay's own feed ``relay/alarms`` carrying the
evidence, so an operator (or an auditor replaying the feed) sees what was refused and why
(docs/federation.md, Equivocation). ``relay/`` feeds are homed by every relay itself
(``Routing.home``), so the feed is never forwarded nor mirrored.

What a peer can make the relay write is bounded: evidence is published once per ``(feed, seq)``
(among the last ``RECENT`` in this process), and at most ``alarms_burst`` alarms, refilled at
``alarms_per_sec`` (``Limits``), are published; past that an alarm is logged and counted
(``suppressed``) but not written.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from collab.canonical import canonical
from collab.errors import CanonicalError, ColonyError, TooLarge
from collab.events import Event

from relay.core.limits import TokenBucket
from relay.core.hub import ALARM_FEED

if TYPE_CHECKING:
    from relay.core.hub import Hub

log = logging.getLogger(__name__)

#: equivocation: a home showed two different records for one seq (or a record whose prev is not
#: the hash of the one it showed before); invalid: a bad signature, shape, feed or receipt key;
#: gap: a record that skips seqs
KINDS = frozenset(("equivocation", "invalid", "gap"))
RECENT = 1024  # (feed, seq) pairs published lately: evidence about one is published once


def compact(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record without its event body: the receipt fields still prove what the home signed."""
    if not isinstance(rec, dict):
        return rec
    event = rec.get("event")
    out = {k: v for k, v in rec.items() if k != "event"}
    if isinstance(event, dict):
        out["event_id"] = event.get("id")
        out["feed"] = event.get("feed")
    return out


class Alarms:
    """Raise and count alarms for one relay."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.count = 0
        self.suppressed = 0  # alarms past the rate: logged and counted, not written
        lim = hub.config.limits
        self._bucket = TokenBucket(lim.alarms_per_sec, lim.alarms_burst)
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()

    async def raise_(self, kind: str, feed: str, seq: int, ours: dict[str, Any] | None,
                     theirs: dict[str, Any] | None, peer: str, reason: str, via: str | None = None) -> None:
        """Log, count and publish one alarm; never raises (an alarm must not break the caller).
        ``via``: the member that passed ``theirs`` on (a fork seen by comparing mirrors)."""
        self.count += 1
        log.error("ALARM %s: %s#%d from peer %s: %s", kind, feed, seq, peer[:16], reason)
        at = (feed, seq)
        if at in self._recent:
            self._recent.move_to_end(at)
            return
        if not self._bucket.take():
            self.suppressed += 1
            log.error("alarm %s for %s#%d not written to %s: over alarms_per_sec", kind, feed, seq, ALARM_FEED)
            return
        self._recent[at] = None
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        if not await self._public(feed):
            # relay/alarms is public: a private feed's evidence keeps the home's signed receipts
            # (what proves the fork) and drops the event bodies (docs/protocol.md 12, 15)
            ours, theirs = compact(ours), compact(theirs)
        body = {"feed": feed, "seq": seq, "ours": ours, "theirs": theirs, "peer": peer, "reason": reason}
        if via is not None:
            body["via"] = via
        try:
            canonical(body)
        except CanonicalError:  # evidence that is not canonical JSON (a malformed record): publish what can be
            body["ours"], body["theirs"] = _printable(ours), _printable(theirs)
        await self._publish(kind, body)

    async def _public(self, feed: str) -> bool:
        """Whether anyone may read ``feed`` (its evidence may then go to relay/alarms whole)."""
        if feed.startswith("dm/"):
            return False
        try:
            rt = self.hub.feeds.get(feed) or await self.hub.runtime(feed)
        except ColonyError:  # cannot tell (storage down, too many feeds): private first
            log.warning("could not tell whether %s is public; its alarm keeps the receipts only", feed)
            return False
        return rt.access.can_read(None)

    async def _publish(self, kind: str, body: dict[str, Any]) -> None:
        key = self.hub.relay_key
        try:
            try:
                ev = Event.create(key, ALARM_FEED, "alarm." + kind, body)
                if ev.size > self.hub.config.limits.max_event_bytes:
                    raise TooLarge("evidence too large")
                await self.hub.runtime_publish(ev, key.public_hex)
            except TooLarge:  # two large records: keep their signed receipts, drop the event bodies
                body = {**body, "ours": compact(body["ours"]), "theirs": compact(body["theirs"])}
                await self.hub.runtime_publish(Event.create(key, ALARM_FEED, "alarm." + kind, body), key.public_hex)
        except ColonyError as exc:
            log.error("could not record the %s alarm in %s: %s", kind, ALARM_FEED, exc)
        except Exception:
            log.exception("could not record the %s alarm in %s", kind, ALARM_FEED)


def _printable(value: Any) -> Any:
    """Evidence as canonical JSON can hold it (malformed input is kept as its repr)."""
    try:
        canonical(value)
    except CanonicalError:
        return repr(value)[:4096]
    return value
