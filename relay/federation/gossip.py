"""Signed heads that mirrors pass on to each other, so a home cannot fork a feed unseen.

Mirrors compare heads with the home, but a home can show relay B one record and relay C
another at the same seq, each consistent with what it tells that mirror. So every
``sync_interval`` each relay also sends every other member the heads of the feeds it mirrors
from a third member (never to the home itself), each carrying the home's signed receipt
(``prev``, ``rtime``, ``relay``, ``rsig``, ``event_id``: enough to recompute the record hash
and check the home's signature, docs/federation.md "Equivocation"). A relay that mirrors the
same feed and stores another record at that seq checks the receipt (hash and home signature):
two different receipts for one seq, both signed by the home, are proof that the home forked the
feed. It raises the equivocation alarm with both records (its own, and the other mirror's, read
from it over HTTP and checked against the receipt, or the receipt alone when it cannot be read)
and refuses that feed's mirroring, as for a fork the home showed it directly. A receipt that does
not verify proves nothing: it is ignored (and logged). The work a peer can cause is that of any
heads frame (``peer_heads_burst`` / ``peer_heads_per_sec``), plus at most one signature check
per head that differs from our stored record.
"""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import httpx

from collab.errors import ColonyError
from collab.events import HEX64_RE, HEX128_RE, Record, receipt_bytes
from collab.keys import verify

from relay.core.routing import LOCAL_PREFIX

if TYPE_CHECKING:
    from relay.federation.mirror import Mirrors, _Feed

log = logging.getLogger(__name__)

#: the receipt fields a passed-on head carries besides ``feed``, ``seq`` and ``hash``
RECEIPT_FIELDS = ("prev", "rtime", "relay", "rsig", "event_id")
FETCH_TIMEOUT = 2.0  # seconds: reading the other mirror's record for the evidence
RECENT = 1024  # forks whose evidence is kept (a fork seen again is not fetched again)


def signed_head(feed: str, seq: int, hsh: str, record: dict[str, Any]) -> dict[str, Any]:
    """A head with the home's receipt of ``record`` (a stored record, as on the wire)."""
    return {"feed": feed, "seq": seq, "hash": hsh, "prev": record["prev"], "rtime": record["rtime"],
            "relay": record["relay"], "rsig": record["rsig"], "event_id": record["event"]["id"]}


def receipt_problem(h: dict[str, Any], home: str) -> str | None:
    """Why ``h`` is not a receipt signed by ``home`` for its ``hash`` (None: it is)."""
    prev, rtime, relay, rsig, event_id = (h.get(k) for k in RECEIPT_FIELDS)
    if relay != home:
        return "the receipt is not the home's"
    if not (isinstance(prev, str) and HEX64_RE.match(prev) and isinstance(rsig, str) and HEX128_RE.match(rsig)
            and isinstance(event_id, str) and HEX64_RE.match(event_id)
            and isinstance(rtime, int) and not isinstance(rtime, bool) and rtime >= 0):
        return "a malformed receipt"
    rb = receipt_bytes(h["feed"], h["seq"], prev, event_id, rtime, relay)
    if hashlib.sha256(rb).hexdigest() != h["hash"]:
        return "the receipt does not hash to the head"
    if not verify(bytes.fromhex(relay), rb, bytes.fromhex(rsig)):
        return "the home's signature does not verify"
    return None


class Forks:
    """The signed heads this relay passes on, and the check of those passed on to it."""

    def __init__(self, mirrors: Mirrors) -> None:
        self.mirrors = mirrors
        self._cache: dict[str, dict[str, Any]] = {}  # feed -> signed head of our stored head
        self._proofs: OrderedDict[tuple[str, int, str], dict[str, Any]] = OrderedDict()  # evidence fetched

    async def heads(self) -> list[tuple[str, dict[str, Any]]]:
        """``(home key, signed head)`` of every loaded feed we mirror (one storage read per feed
        whose head moved since the last tick)."""
        mirrors, out = self.mirrors, []
        for feed, m in list(mirrors.feeds.items()):
            rt = mirrors.hub.feeds.get(feed)
            if rt is None or rt.seq == 0 or feed.startswith(LOCAL_PREFIX):
                continue
            head = self._cache.get(feed)
            if head is None or head["seq"] != rt.seq or head["hash"] != rt.head:
                stored = await mirrors.stored(feed, rt.seq)
                if stored is None:
                    continue  # compacted away
                head = self._cache[feed] = signed_head(feed, rt.seq, stored["hash"], stored["record"])
            out.append((m.home.key, head))
        return out

    async def check(self, via: str, m: _Feed, h: dict[str, Any], seq: int, hsh: str) -> None:
        """A head of ``m``'s feed that ``via`` (a member other than the home) holds: if our record
        at that seq differs and the home signed both, the home forked the feed."""
        mirrors, feed = self.mirrors, m.feed
        rt = mirrors.hub.feeds.get(feed)
        if rt is not None and (rt.seq < seq or (rt.seq == seq and rt.head == hsh)):
            return  # we do not hold that seq yet (the next interval compares it), or the same record
        stored = await mirrors.stored(feed, seq)
        if stored is None or stored["hash"] == hsh:
            return
        why = receipt_problem(h, m.home.key)
        if why is not None:
            log.warning("peer %s passed on a head %s#%d that proves nothing (%s): ignored", via[:16], feed, seq, why)
            return
        theirs = await self._evidence(via, feed, seq, h)
        mirrors.refuse_feed(m, f"equivocation: {feed}#{seq}")
        await mirrors.alarms.raise_("equivocation", feed, seq, stored["record"], theirs, m.home.key,
                                    f"the home signed another record #{seq} for peer {via[:16]}…", via=via)

    async def _evidence(self, via: str, feed: str, seq: int, h: dict[str, Any]) -> dict[str, Any]:
        """The other mirror's whole record, read from it over HTTP and checked against the receipt
        it passed on; the receipt alone when it cannot be read (a members-only feed, a member that
        does not answer within ``FETCH_TIMEOUT``). Fetched once per fork (the last ``RECENT``)."""
        at = (feed, seq, h["hash"])
        if at in self._proofs:
            self._proofs.move_to_end(at)
            return self._proofs[at]
        theirs: dict[str, Any] = {k: h[k] for k in ("feed", "seq", "hash", *RECEIPT_FIELDS)}
        member = next((p for p in self.mirrors.routing.peers if p.key == via), None)
        http = self.mirrors.http
        if member is not None and http is not None:
            try:
                resp = await http.get(f"{member.url}/feeds/{feed}/events", params={"since": seq - 1, "limit": 1},
                                      timeout=FETCH_TIMEOUT)
                rows = resp.json().get("records") if resp.status_code == 200 else None
                if isinstance(rows, list) and rows and Record.from_wire(rows[0]).hash == h["hash"]:
                    theirs = rows[0]
            except (httpx.HTTPError, ValueError, AttributeError, ColonyError) as exc:
                log.info("could not read %s#%d from %s (%r): the alarm carries its receipt", feed, seq, member.url, exc)
        self._proofs[at] = theirs
        if len(self._proofs) > RECENT:
            self._proofs.popitem(last=False)
        return theirs
