"""``POST /feeds/{feed}/events`` in a federation (docs/protocol.md 15.2, docs/federation.md): a
publish to a relay that does not home the feed is forwarded to its home through the same hub
call as a ``/ws`` publish and acked with the home's seq; the same event sent to the home is a
duplicate; with the home out of reach the answer is 503 ``home_unreachable`` and nothing is
stored. (Forwarding does not depend on the backend: SQLite only.)"""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from collab.events import Event
from collab.keys import Keypair
from tests.conftest import Backend
from tests.relay.federation.test_link import DEADLINE, Federation, http_events
from tests.wait import eventually


@pytest.fixture
async def fed2(tmp_path: Path) -> AsyncIterator[Federation]:
    f = Federation(tmp_path, Backend("sqlite"), ("a", "b"))  # note/* and doc/* are pinned to b
    try:
        yield f
    finally:
        await f.close()


async def test_http_publish_to_a_non_home_relay_is_acked_with_the_homes_seq(fed2: Federation) -> None:
    a, b = fed2.sites["a"], fed2.sites["b"]
    ra = await fed2.start("a")
    await fed2.start("b")
    link = ra.relay.federation.links[b.hex]
    await link.wait_connected(DEADLINE)
    author = Keypair.generate()
    feed = "note/over-http"
    events = [Event.create(author, feed, "note.text", {"n": n}) for n in range(3)]
    async with httpx.AsyncClient(timeout=30) as http:
        acks = [(await http.post(f"{a.url}/feeds/{feed}/events", json=ev.to_wire())).json() for ev in events]
        assert acks == [{"id": ev.id, "seq": n, "dup": False} for n, ev in enumerate(events, 1)]
        stored = await http_events(b, feed)  # b ordered and sealed them
        assert [r["event"]["id"] for r in stored] == [ev.id for ev in events]
        assert {r["relay"] for r in stored} == {b.hex}
        # the same event at the home, and again at a: the home's seq, stored once
        for site in (b, a):
            again = await http.post(f"{site.url}/feeds/{feed}/events", json=events[1].to_wire())
            assert again.json() == {"id": events[1].id, "seq": 2, "dup": True}
        assert len(await http_events(b, feed)) == 3

        await fed2.stop("b")
        await eventually(lambda: not link.connected, DEADLINE, "a's link to notice b is gone")
        late = Event.create(author, feed, "note.text", {"n": 3})
        resp = await http.post(f"{a.url}/feeds/{feed}/events", json=late.to_wire())
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert resp.json() == {"error": "home_unreachable", "feed": feed, "id": late.id,
                               "message": "the relay that homes this feed is out of reach; retry later"}
    rows = await ra.relay.storage.read(feed, 0, 100)  # a stored nothing of its own (at most b's mirrored records)
    assert not any(late.id in r.data for r in rows) and all(b.hex in r.data for r in rows)
