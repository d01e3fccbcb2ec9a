"""The agent directory end to end: real relays (both backends), real sockets, no mocks.

Agents publish ``agent.profile`` events into their own ``agent/<KEY>`` feeds; the relay's
in-memory index answers ``GET /agents`` (docs/coordination.md, "Directory"). Waiting is always
on real state with a deadline, never a fixed sleep.
"""
from __future__ import annotations

import asyncio
import json
import random
import statistics
import string
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from collab import directory
from collab.client import Client
from collab.events import Event, hello_bytes
from collab.keys import Keypair
from relay.ops.runner import Running, serving
from tests.conftest import Backend, make_config
from tests.wait import eventually

pytestmark = pytest.mark.timeout(120)


# -- helpers -------------------------------------------------------------------------------

def profile_event(key: Keypair, name: str, description: str = "", capabilities: Sequence[str] = ()) -> Event:
    body: dict[str, Any] = {"name": name}
    if description:
        body["description"] = description
    if capabilities:
        body["capabilities"] = list(capabilities)
    return Event.create(key, f"agent/{key.public_hex}", "agent.profile", body)


async def publish_as(ws_url: str, key: Keypair, event: Event) -> dict[str, Any]:
    """One short connection: hello as ``key`` and publish ``event`` in one message; the reply."""
    async with websockets.connect(ws_url) as ws:
        challenge = json.loads(await ws.recv())
        sig = key.sign(hello_bytes(key.public_hex, challenge["nonce"], challenge["relay"])).hex()
        await ws.send(json.dumps({"t": "hello", "key": key.public_hex, "sig": sig}) + "\n"
                      + json.dumps({"t": "pub", "rid": "p", "event": event.to_wire()}))
        while True:
            for part in (await ws.recv()).split("\n"):
                frame = json.loads(part)
                if frame.get("rid") == "p" and frame["t"] in ("ok", "error"):
                    return frame  # type: ignore[no-any-return]
                if frame["t"] == "error":
                    raise AssertionError(f"relay error before the ack: {frame}")


async def publish_many(ws_url: str, items: Sequence[tuple[Keypair, Event]], concurrency: int = 32) -> None:
    """Publish each event from a connection authenticated as its own author (the relay insists
    that an event's author is the connection's key), ``concurrency`` connections at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one(key: Keypair, ev: Event) -> None:
        async with sem:
            frame = await publish_as(ws_url, key, ev)
            assert frame["t"] == "ok", frame

    await asyncio.gather(*(one(k, e) for k, e in items))


async def get(http: httpx.AsyncClient, url: str, **params: Any) -> Any:
    r = await http.get(url, params=params)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


async def timed_get(http: httpx.AsyncClient, url: str, **params: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    r = await http.get(url, params=params)
    elapsed = time.perf_counter() - start
    assert r.status_code == 200, (r.status_code, r.text)
    return elapsed, r.json()


def order(profiles: dict[str, dict[str, Any]], keys: Any) -> list[str]:
    """Keys sorted as the directory sorts: by name (case-insensitive), then key."""
    return sorted(keys, key=lambda k: (profiles[k]["name"].lower(), k))


async def online_keys(http: httpx.AsyncClient, url: str) -> set[str]:
    body = await get(http, f"{url}/agents", online="true", limit=1000)
    assert body["total"] == len(body["agents"])
    return {a["key"] for a in body["agents"]}


# -- 1,000 agents --------------------------------------------------------------------------

N_AGENTS = 1000
CAPS = [f"cap{i}" for i in range(7)]


async def test_thousand_agents_fast_listing_capabilities_and_presence(relay: Running) -> None:
    rng = random.Random(1234)
    names: set[str] = set()
    profiles: dict[str, dict[str, Any]] = {}
    items: list[tuple[Keypair, Event]] = []
    for i in range(N_AGENTS):
        key = Keypair.generate()
        name = ""
        while not name or name.lower() in names:
            name = "".join(rng.choice(string.ascii_letters) for _ in range(10))
        names.add(name.lower())
        caps = [CAPS[i % len(CAPS)]] + (["gpu"] if i % 3 == 0 else [])
        desc = f"agent number {i}"
        profiles[key.public_hex] = {"name": name, "description": desc, "capabilities": caps}
        items.append((key, profile_event(key, name, desc, caps)))

    start = time.perf_counter()
    await publish_many(relay.ws_url, items)
    took = time.perf_counter() - start
    assert took < 30, f"registering {N_AGENTS} agents took {took:.1f}s"

    # three agents that stay online: their clients follow their own feeds
    online_clients: list[Client] = []
    online_profiles = [("zz-online-a", ["cap0", "live"]), ("zz-online-b", ["live"]), ("zz-online-c", ["live"])]
    try:
        for name, caps in online_profiles:
            key = Keypair.generate()
            c = Client(relay.url, key)
            await c.__aenter__()
            online_clients.append(c)
            sub = await directory.register(c, name, "stays connected", caps, online=True)
            assert sub is not None
            await sub.wait_synced(10)
            profiles[key.public_hex] = {"name": name, "description": "stays connected", "capabilities": caps}
        live = {c.key.public_hex for c in online_clients if c.key}

        async with httpx.AsyncClient(timeout=10.0) as http:
            await get(http, f"{relay.url}/agents")  # warm the connection
            # first page: fast, and exactly the first 100 profiles by name
            times, first = [], None
            for _ in range(5):
                t, first = await timed_get(http, f"{relay.url}/agents")
                times.append(t)
            assert statistics.median(times) < 0.1, times
            assert first is not None and first["total"] == N_AGENTS + 3
            expected = order(profiles, profiles)
            assert [a["key"] for a in first["agents"]] == expected[:100]
            for a in first["agents"]:
                p = profiles[a["key"]]
                assert (a["name"], a["description"], a["capabilities"]) == (p["name"], p["description"],
                                                                            p["capabilities"])
                assert a["online"] is (a["key"] in live)
                assert isinstance(a["updated"], int) and a["updated"] > 0

            # by capability: fast, and the right count and members
            for cap in ["cap3", "gpu", "cap0"]:
                times, body = [], None
                for _ in range(5):
                    t, body = await timed_get(http, f"{relay.url}/agents", capability=cap)
                    times.append(t)
                assert statistics.median(times) < 0.1, (cap, times)
                want = order(profiles, [k for k, p in profiles.items() if cap in p["capabilities"]])
                assert body is not None and body["total"] == len(want)
                assert [a["key"] for a in body["agents"]] == want[:100]
                full = await get(http, f"{relay.url}/agents", capability=cap, limit=1000)
                assert [a["key"] for a in full["agents"]] == want
            assert (await get(http, f"{relay.url}/agents", capability="nobody-has-this"))["total"] == 0

            # the whole list in one page, sorted by name
            everything = await get(http, f"{relay.url}/agents", limit=1000)
            assert everything["total"] == N_AGENTS + 3 and len(everything["agents"]) == 1000
            assert [a["key"] for a in everything["agents"]] == expected[:1000]

            # presence: exactly the three connected agents are online
            assert await online_keys(http, relay.url) == live
            offline = await get(http, f"{relay.url}/agents", online="false", limit=10)
            assert offline["total"] == N_AGENTS
            live_cap = await get(http, f"{relay.url}/agents", capability="live", online="true")
            assert {a["key"] for a in live_cap["agents"]} == live
            for c in online_clients:
                one = await get(http, f"{relay.url}/agents/{c.key.public_hex}")  # type: ignore[union-attr]
                assert one["online"] is True and one["name"].startswith("zz-online-")
            some = items[0][0].public_hex
            one = await get(http, f"{relay.url}/agents/{some}")
            assert one["online"] is False and one["name"] == profiles[some]["name"]

            # one of them disconnects: it goes offline, the others stay
            gone = online_clients.pop(0)
            gone_key = gone.key.public_hex  # type: ignore[union-attr]
            await gone.aclose()

            async def left() -> bool:
                return await online_keys(http, relay.url) == live - {gone_key}

            await eventually(left, 10, "the closed client's agent to go offline")
            assert (await get(http, f"{relay.url}/agents/{gone_key}"))["online"] is False
            assert (await get(http, f"{relay.url}/agents"))["total"] == N_AGENTS + 3  # the profile stays
    finally:
        for c in online_clients:
            await c.aclose()


# -- search, pagination, replacement, restart ----------------------------------------------

async def test_search_pagination_replacement_and_restart(tmp_path: Path, backend: Backend) -> None:
    cfg = make_config(tmp_path / "dir", backend, "dir")
    keys = [Keypair.generate() for _ in range(25)]
    profiles: dict[str, dict[str, Any]] = {}
    items = []
    for i, key in enumerate(keys):
        name = f"{'Scout' if i % 5 == 0 else 'Worker'} {i:02d}"
        desc = "Translates French" if i % 4 == 0 else "general purpose"
        caps = ["translate"] if i % 4 == 0 else ["compute"]
        profiles[key.public_hex] = {"name": name, "description": desc, "capabilities": caps}
        items.append((key, profile_event(key, name, desc, caps)))
    mover = keys[1]

    async with serving(cfg) as relay, httpx.AsyncClient(timeout=10.0) as http:
        await publish_many(relay.ws_url, items, concurrency=8)
        url = relay.url

        # text search: name or description, case-insensitive substring
        scouts = await get(http, f"{url}/agents", q="sCoUt")
        assert {a["key"] for a in scouts["agents"]} == {k for k, p in profiles.items() if "Scout" in p["name"]}
        assert scouts["total"] == 5
        french = await get(http, f"{url}/agents", q="FRENCH")
        assert {a["key"] for a in french["agents"]} == {k for k, p in profiles.items()
                                                         if "French" in p["description"]}
        both = await get(http, f"{url}/agents", q="scout", capability="translate")
        assert {a["key"] for a in both["agents"]} == {k for k, p in profiles.items()
                                                       if "Scout" in p["name"] and "translate" in p["capabilities"]}
        assert (await get(http, f"{url}/agents", q="no such text"))["total"] == 0
        assert [a["key"] for a in (await directory.find(url, text="french", client=http))] == \
            [a["key"] for a in french["agents"]]

        # pagination: pages of 10 put together are the full sorted list
        full = order(profiles, profiles)
        pages = []
        for offset in (0, 10, 20):
            page = await get(http, f"{url}/agents", limit=10, offset=offset)
            assert page["total"] == 25
            pages.append([a["key"] for a in page["agents"]])
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [key for p in pages for key in p] == full
        past = await get(http, f"{url}/agents", limit=10, offset=25)
        assert past == {"total": 25, "agents": []}
        assert [a["key"] for a in (await get(http, f"{url}/agents", limit=3, offset=2))["agents"]] == full[2:5]

        # a newer profile replaces the old one in the index (capability moved)
        assert mover.public_hex in {a["key"] for a in (await get(http, f"{url}/agents", capability="compute",
                                                                 limit=1000))["agents"]}
        async with Client(url, mover) as c:
            await directory.register(c, "Mover renamed", "now a translator", ["translate", "Summarize"],
                                     online=False)
        profiles[mover.public_hex] = {"name": "Mover renamed", "description": "now a translator",
                                      "capabilities": ["translate", "Summarize"]}

        async def check_replaced(r: Running) -> None:
            compute = await get(http, f"{r.url}/agents", capability="compute", limit=1000)
            assert mover.public_hex not in {a["key"] for a in compute["agents"]}
            assert compute["total"] == sum("compute" in p["capabilities"] for p in profiles.values())
            tr = await get(http, f"{r.url}/agents", capability="translate", limit=1000)
            assert [a["key"] for a in tr["agents"]] == order(
                profiles, [k for k, p in profiles.items() if "translate" in p["capabilities"]])
            summ = await get(http, f"{r.url}/agents", capability="Summarize")
            assert [a["key"] for a in summ["agents"]] == [mover.public_hex]
            one = await get(http, f"{r.url}/agents/{mover.public_hex}")
            assert (one["name"], one["description"], one["capabilities"]) == (
                "Mover renamed", "now a translator", ["translate", "Summarize"])
            assert (await get(http, f"{r.url}/agents", q="renamed"))["total"] == 1
            assert (await get(http, f"{r.url}/agents", q="Worker 01"))["total"] == 0
            everything = await get(http, f"{r.url}/agents", limit=1000)
            assert everything["total"] == 25
            assert [a["key"] for a in everything["agents"]] == order(profiles, profiles)

        await check_replaced(relay)
        before = await get(http, f"{url}/agents", limit=1000)

    # a restart on the same storage builds the index from the stored feeds
    async with serving(cfg) as relay2, httpx.AsyncClient(timeout=10.0) as http:
        after = await get(http, f"{relay2.url}/agents", limit=1000)
        assert after == before
        await check_replaced(relay2)
        assert all(a["online"] is False for a in after["agents"])


async def test_presence_in_a_members_feed_is_not_shown_online(relay: Running) -> None:
    """An agent connected only to a private (``members``) feed of its own is not online to the
    world in ``/agents``; once it follows a feed anyone reads, it is."""
    key = Keypair.generate()
    async with Client(relay.url, key) as c, httpx.AsyncClient(timeout=10.0) as http:
        assert (await directory.register(c, "zz-private", "only private feeds", ["x"], online=False)) is None
        private = f"notes/{key.public_hex[:8]}-private"
        await c.publish(private, "feed.policy", {"policy": "members"})
        sub = await c.subscribe(private)
        await sub.wait_synced(10)
        assert key.public_hex in relay.relay.hub.feeds[private].present  # it is present there
        assert key.public_hex not in await online_keys(http, relay.url)
        assert (await get(http, f"{relay.url}/agents/{key.public_hex}"))["online"] is False
        public = await c.subscribe(f"notes/{key.public_hex[:8]}-public")
        await public.wait_synced(10)
        await eventually(lambda: _is_online(http, relay.url, key.public_hex), 10)


async def _is_online(http: httpx.AsyncClient, url: str, key: str) -> bool:
    return key in await online_keys(http, url)


async def test_unknown_agent_is_404(relay: Running) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        r = await http.get(f"{relay.url}/agents/{Keypair.generate().public_hex}")
        assert r.status_code == 404 and r.json()["error"] == "not_found"


@pytest.mark.parametrize("query", [
    "limit=abc", "online=maybe", "limit=0", "limit=-1", "limit=1001", "offset=-5", "offset=x",
    "limit=%EF%BC%91",  # a fullwidth digit 1: not ASCII
])
async def test_bad_query_params_are_400(relay: Running, query: str) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        r = await http.get(f"{relay.url}/agents?{query}")
        assert r.status_code == 400, (query, r.status_code, r.text)
        assert r.json()["error"] == "invalid"


# -- several processes of one site (Redis) -------------------------------------------------

@pytest.mark.parametrize("backend", ["redis"], indirect=True)  # several processes of one site share Redis
async def test_profile_on_one_process_is_listed_by_another(start_relay: Callable[..., Awaitable[Running]],
                                                           backend: Backend) -> None:
    a = await start_relay("a", site="s")
    b = await start_relay("b", site="s")
    key = Keypair.generate()
    hexkey = key.public_hex

    async with httpx.AsyncClient(timeout=10.0) as http:
        async def listed_on_b(cap: str, name: str) -> bool:
            body = await get(http, f"{b.url}/agents", capability=cap)
            return [(x["key"], x["name"]) for x in body["agents"]] == [(hexkey, name)]

        async with Client(a.url, key) as c:
            await directory.register(c, "far away", "published on a", ["remote-cap"], online=False)
            await eventually(lambda: listed_on_b("remote-cap", "far away"), 10,
                             "a profile published on process a to be listed by process b")
            one = await get(http, f"{b.url}/agents/{hexkey}")
            assert one["description"] == "published on a"

            # a newer profile on a replaces the old one on b too
            await directory.register(c, "moved", "", ["other-cap"], online=False)
            await eventually(lambda: listed_on_b("other-cap", "moved"), 10, "the newer profile on process b")
            assert (await get(http, f"{b.url}/agents", capability="remote-cap"))["total"] == 0

            # presence on a shows on b: the agent follows its own feed on process a
            await directory.register(c, "moved", "", ["other-cap"], online=True)

            async def online_on_b() -> bool:
                return (await get(http, f"{b.url}/agents/{hexkey}"))["online"] is True

            await eventually(online_on_b, 10, "an agent online on process a to be online on process b")
            assert await online_keys(http, b.url) == {hexkey}
            assert await online_keys(http, a.url) == {hexkey}

        async def offline_on_b() -> bool:
            return await online_keys(http, b.url) == set()

        await eventually(offline_on_b, 10, "the agent to go offline on process b once its client closed")
