"""Anonymous and cheap requests do not allocate (docs/reliability.md, Cheap requests).

End to end on real relays over both backends: reads and ``/yjs`` connects of feeds nobody
wrote leave ``colony_feeds_loaded`` where it was; loaded feeds stay under
``max_loaded_feeds`` (idle ones unloaded least recently used first, ``busy`` when none is
idle); sub/unsub churn is refused per connection and a bystander's presence frames stay
bounded, also when the churn comes from another process of a Redis site.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

import httpx

from collab.events import Event
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.ops.runner import Running
from tests.conftest import Backend
from tests.rawclient import Raw
from tests.relay.promtext import parse, value
from tests.wait import eventually
from tests.yclient import YClient


async def loaded(http: httpx.AsyncClient, r: Running) -> int:
    resp = await http.get(f"{r.url}/metrics")
    assert resp.status_code == 200
    return int(value(parse(resp.text)[1], "colony_feeds_loaded"))


async def publish(raw: Raw, key: Keypair, feed: str, n: int = 0) -> None:
    ev = Event.create(key, feed, "note.add", {"n": n})
    reply = await raw.request({"t": "pub", "event": ev.to_wire()}, f"p-{feed}-{n}")
    assert reply["t"] == "ok", reply


async def subscribe(raw: Raw, feed: str) -> dict[str, Any]:
    """Subscribe and wait until live (``synced``) or refused (``error``)."""
    start = len(raw.frames)
    await raw.send({"t": "sub", "feed": feed, "rid": f"s-{feed}"})
    return await raw.wait(lambda f: f.get("feed") == feed and f["t"] in ("synced", "error"), start=start)


async def test_anonymous_requests_leave_nothing_loaded(start_relay: Any, backend: Backend) -> None:
    """200 HTTP reads (the three read routes in turn), 30 /yjs connects and 100 sub/unsub pairs
    of random feeds: the loaded-feed count never moves for HTTP and is back where it started
    once the connections left."""
    r: Running = await start_relay("r")
    async with httpx.AsyncClient() as http:
        before = await loaded(http, r)
        for i in range(201):
            feed = f"misc/{uuid.uuid4().hex}"
            route = ("/events", "/state", "")[i % 3]
            resp = await http.get(f"{r.url}/feeds/{feed}{route}")
            if route == "/events":
                assert resp.status_code == 200
                assert resp.json() == {"feed": feed, "seq": 0, "head": "0" * 64, "records": []}
            else:
                assert resp.status_code == 404 and resp.json()["error"] == "not_found"
        assert await loaded(http, r) == before
        for _ in range(30):
            y = await YClient.connect(r.yjs_url, uuid.uuid4().hex)
            await y.synced
            await y.close()
        raw = await Raw.connect(r.ws_url)
        for _ in range(100):
            feed = f"misc/{uuid.uuid4().hex}"
            assert (await subscribe(raw, feed))["t"] == "synced"
            assert (await raw.request({"t": "unsub", "feed": feed}, f"u-{feed}"))["t"] == "unsubbed"
        assert await loaded(http, r) == before  # unloaded at the unsub itself
        await raw.close()

        async def settled() -> bool:
            return await loaded(http, r) == before

        await eventually(settled, 10, "the /yjs documents unloaded once their clients left")


async def test_loaded_feeds_are_capped(start_relay: Any, backend: Backend) -> None:
    """max_loaded_feeds=8: publishing to 20 feeds never holds more than 8; with 8 feeds held by
    subscribers, loading a 9th is refused (HTTP 503 busy + Retry-After, error busy on /ws,
    close 1013 on /yjs) while reads of unwritten feeds still answer; one unsubscribe makes room."""
    cap = 8
    r: Running = await start_relay("r", limits=Limits(max_loaded_feeds=cap))
    key = Keypair.generate()
    feeds = [f"misc/lru-{i:02d}" for i in range(20)]
    async with httpx.AsyncClient() as http:
        pub = await Raw.connect(r.ws_url, key)
        for i, feed in enumerate(feeds):
            await publish(pub, key, feed, i)
            assert await loaded(http, r) <= cap
        assert (await http.get(f"{r.url}/limits")).json()["max_loaded_feeds"] == cap
        holder = await Raw.connect(r.ws_url)
        for feed in feeds[:cap]:
            assert (await subscribe(holder, feed))["t"] == "synced"
        assert await loaded(http, r) == cap
        resp = await http.get(f"{r.url}/feeds/{feeds[cap]}/events")
        assert resp.status_code == 503 and resp.json()["error"] == "busy"
        assert resp.headers["retry-after"] == "1"
        other = await Raw.connect(r.ws_url)
        refused = await subscribe(other, feeds[cap])
        assert refused["t"] == "error" and refused["code"] == "busy"
        y = await YClient.connect(r.yjs_url, "never-written")
        assert (await y.closed)[0] == 1013
        empty = await http.get(f"{r.url}/feeds/misc/{uuid.uuid4().hex}/events")
        assert empty.status_code == 200 and empty.json()["records"] == []
        assert (await holder.request({"t": "unsub", "feed": feeds[0]}, "u0"))["t"] == "unsubbed"
        ok = await http.get(f"{r.url}/feeds/{feeds[cap]}/events")
        assert ok.status_code == 200 and len(ok.json()["records"]) == 1
        assert await loaded(http, r) <= cap
        scraped = parse((await http.get(f"{r.url}/metrics")).text)[1]
        assert value(scraped, "colony_feeds_evicted_total") >= len(feeds) - cap
        for c in (pub, holder, other):
            await c.close()


def presence_view(frames: list[dict[str, Any]], feed: str) -> tuple[set[str], int]:
    """The participant set a subscriber sees, and how many join/leave frames it got."""
    view: set[str] = set()
    changes = 0
    for f in frames:
        if f["t"] != "presence" or f["feed"] != feed:
            continue
        if f["op"] == "list":
            view = set(f["keys"])
        else:
            changes += 1
            (view.update if f["op"] == "join" else view.difference_update)(f["keys"])
    return view, changes


async def test_sub_churn_is_refused_and_presence_coalesced(start_relay: Any, backend: Backend) -> None:
    """300 sub/unsub pairs from one keyed connection, sent as one batch: beyond the burst (20)
    and rate (5/s) the subs are refused with rate_limited, and a bystander gets at most
    1 + 2 per presence_interval join/leave frames, ending with the churner gone. On Redis the
    churner is on another process of the site (presence crosses over the bus)."""
    interval, burst = 0.25, 20
    limits = Limits(subs_per_sec=5.0, subs_burst=burst, presence_interval=interval)
    a: Running = await start_relay("a", site="s", limits=limits)
    b: Running = await start_relay("b", site="s", limits=limits) if backend.name == "redis" else a
    feed = "misc/churn"
    watcher_key, churn_key = Keypair.generate(), Keypair.generate()
    watcher = await Raw.connect(a.ws_url, watcher_key)
    assert (await subscribe(watcher, feed))["t"] == "synced"
    churner = await Raw.connect(b.ws_url, churn_key)
    pairs = 300
    batch = "\n".join(json.dumps(f) for i in range(pairs) for f in (
        {"t": "sub", "feed": feed, "rid": f"s{i}"}, {"t": "unsub", "feed": feed, "rid": f"u{i}"}))
    t0 = time.monotonic()
    await churner.send(batch)
    await churner.wait(lambda f: f.get("rid") == f"u{pairs - 1}")
    refused = [f for f in churner.frames if f["t"] == "error" and f.get("rid", "").startswith("s")]
    assert all(f["code"] == "rate_limited" for f in refused)
    accepted = pairs - len(refused)
    elapsed = time.monotonic() - t0
    assert burst <= accepted <= burst + math.ceil(5.0 * elapsed) + 1
    await eventually(lambda: presence_view(watcher.frames, feed)[0] == {watcher_key.public_hex}, 10,
                     "the churner gone from the bystander's participant list")
    elapsed = time.monotonic() - t0
    changes = presence_view(watcher.frames, feed)[1]
    assert changes <= 1 + 2 * math.ceil(elapsed / interval), (changes, elapsed)
    assert changes < accepted  # without coalescing: 2 per accepted pair
    await watcher.close()
    await churner.close()
