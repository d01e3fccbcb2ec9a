"""Quotas (issue 12, item 6; docs/protocol.md section 14): feeds created per author key (rate
and total), a doc/ feed's size in event bytes, and publishes per feed per second. Each is
configured through ``Limits``, advertised at ``GET /limits`` and refused with its code; real
relays on both backends, real clients. Rates are chosen so refill is negligible (no sleeps)."""
from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Text

from collab.client import Client
from collab.errors import RelayError
from collab.keys import Keypair
from relay.core.limits import FeedQuota, Limits

pytestmark = pytest.mark.timeout(60)

SLOW = 1e-6  # a rate that refills nothing during a test


async def refused(c: Client, feed: str, kind: str = "note", body: Any = None) -> str:
    with pytest.raises(RelayError) as err:
        await c.publish(feed, kind, body if body is not None else {})
    return err.value.code


def test_feed_quota_charges_each_creation_and_exempts_the_relay() -> None:
    q = FeedQuota(Limits(feeds_per_sec_key=SLOW, feeds_burst_key=3, max_feeds_per_key=2), exempt="relay")
    assert q.refusal("k") is None and q.refusal("k") is None
    err = q.refusal("k")
    assert err is not None and err.code == "limit_exceeded"
    assert all(q.refusal("relay") is None for _ in range(10))
    q = FeedQuota(Limits(feeds_per_sec_key=SLOW, feeds_burst_key=2, max_feeds_per_key=100), exempt="relay")
    assert [None if q.refusal("k") is None else q.refusal("k") for _ in range(2)] == [None, None]
    err = q.refusal("k")
    assert err is not None and err.code == "rate_limited"
    assert q.created["k"] == 2  # a refused creation is not counted


async def test_feeds_per_key_rate_and_total(start_relay: Callable[..., Any]) -> None:
    fast = await start_relay("rate", limits=Limits(feeds_per_sec_key=SLOW, feeds_burst_key=3))
    total = await start_relay("total", limits=Limits(max_feeds_per_key=2))
    async with httpx.AsyncClient() as http:
        advertised = (await http.get(f"{fast.url}/limits")).json()
    assert advertised["feeds_burst_key"] == 3 and advertised["max_feeds_per_key"] == 10_000
    key, other = Keypair.generate(), Keypair.generate()
    async with Client(fast.url, key, retry_limit=0) as c, Client(fast.url, other, retry_limit=0) as d:
        for n in range(3):
            await c.publish(f"notes/mine{n}", "note", {})
        assert await refused(c, "notes/mine3") == "rate_limited"
        await c.publish("notes/mine0", "note", {"more": 1})  # writing to its feeds is no creation
        await d.publish("notes/theirs", "note", {})  # another key has its own bucket
    assert await fast.relay.hub.storage.head("notes/mine3") is None  # nothing stored
    async with Client(total.url, key, retry_limit=0) as c:
        await c.publish("notes/a", "note", {})
        await c.publish("notes/b", "note", {})
        assert await refused(c, "notes/c") == "limit_exceeded"


def doc_update(chars: int) -> str:
    d = Doc()
    d["text"] = t = Text()
    t += "x" * chars
    return base64.b64encode(d.get_update()).decode()


async def test_a_doc_is_refused_past_max_doc_bytes_and_events_per_feed(start_relay: Callable[..., Any]) -> None:
    running = await start_relay("doc", limits=Limits(max_doc_bytes=6000, events_per_sec_feed=SLOW, burst_feed=8))
    key = Keypair.generate()
    async with Client(running.url, key, retry_limit=0) as c:
        accepted, code = 0, ""
        for _ in range(5):  # each event is ~1.3 kB of signing bytes
            try:
                await c.publish("doc/big", "doc.update", {"update": doc_update(900)})
                accepted += 1
            except RelayError as exc:
                code = exc.code
                break
        assert code == "too_large"
        rt = running.relay.hub.feeds["doc/big"]
        assert 0 < accepted < 5 and rt.seq == accepted and rt.core.bytes <= 6000
        assert await refused(c, "doc/big", "doc.update", {"update": doc_update(900)}) == "too_large"
        # publishes per feed: the burst of 8, then rate_limited (the doc feed's bucket is its own)
        for n in range(8):
            await c.publish("notes/busy", "note", {"n": n})
        assert await refused(c, "notes/busy") == "rate_limited"
        assert running.relay.hub.feeds["notes/busy"].seq == 8
