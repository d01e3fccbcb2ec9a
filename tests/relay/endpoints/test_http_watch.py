"""``GET /watch?prefix=`` (docs/protocol.md 15.5), both backends: a Server-Sent Events stream of
announcements, anonymous (public feeds) or signed (15.1: the feeds its key may read too), its
refusals, and its watch released when the client goes away."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from collab import httpauth
from collab.client import Client
from collab.events import now_ms
from collab.keys import Keypair
from collab.protocol import Announce
from relay.ops.runner import Running
from tests.wait import eventually

FAST = {"backoff_base": 0.02, "backoff_max": 0.2}


async def announcements(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The ``announce`` events of an SSE stream's lines, in order (comments, blank lines skipped)."""
    event = None
    async for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "announce":
            yield json.loads(line[6:])


async def test_watch_stream_announces_what_its_caller_may_read(relay: Running) -> None:
    owner = Keypair.generate()
    path = "/watch"
    signed = {"authorization": httpauth.authorization(owner, relay.relay.hub.relay_key.public_hex, "GET", path,
                                                      now_ms())}
    async with httpx.AsyncClient(timeout=10) as http, Client(relay.url, owner, **FAST) as c:
        async with http.stream("GET", f"{relay.url}/watch", params={"prefix": "club/"}) as anon, \
                http.stream("GET", f"{relay.url}/watch", params={"prefix": "club/"}, headers=signed) as mine:
            lines = []
            for resp in (anon, mine):
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                lines.append(resp.aiter_lines())
                assert await lines[-1].__anext__() == ": watching"  # the watch is on
            await c.publish("club/secret", "feed.policy", {"policy": "members"})
            await c.publish("club/secret", "club.say", {})
            ack = await c.publish("club/open", "club.say", {})
            anon_it, mine_it = announcements(lines[0]), announcements(lines[1])
            got = [await asyncio.wait_for(anon_it.__anext__(), 10)]
            assert [(a["feed"], a["seq"]) for a in got] == [("club/open", 1)]
            assert set(got[0]) == {"feed", "seq", "head", "kind", "rtime"}
            Announce.from_wire(got[0])  # the SDK parses it as it parses the native frame
            mine_got = [await asyncio.wait_for(mine_it.__anext__(), 10) for _ in range(3)]
            assert [(a["feed"], a["seq"], a["kind"]) for a in mine_got] == [
                ("club/secret", 1, "feed.policy"), ("club/secret", 2, "club.say"), ("club/open", 1, "club.say")]
            assert ack.seq == 1
            assert len(relay.relay.hub.watches.of) == 2
        # the client went away: its watch and its connection slot are released
        await eventually(lambda: not relay.relay.hub.watches.of and sum(relay.relay.per_ip.values()) == 1, 10,
                         "the /watch streams released (the client's WebSocket left)")


async def test_watch_stream_refusals(relay: Running) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for params in ({}, {"prefix": "Club/"}, {"prefix": "a//"}):
            r = await http.get(f"{relay.url}/watch", params=params)
            assert (r.status_code, r.json()["error"]) == (400, "invalid"), params
        other = httpauth.authorization(Keypair.generate(), relay.relay.hub.relay_key.public_hex, "GET", "/feeds",
                                       now_ms())
        r = await http.get(f"{relay.url}/watch", params={"prefix": "a/"}, headers={"authorization": other})
        assert (r.status_code, r.json()["error"]) == (401, "bad_signature")
        r = await http.get(f"{relay.url}/watch", params={"prefix": "a/"}, headers={"authorization": "Colony x"})
        assert (r.status_code, r.json()["error"]) == (400, "invalid")
