"""GET /feeds/{feed}/state?at=SEQ: the derived state as it was at an earlier seq (time travel)."""
from __future__ import annotations

import httpx
import pytest

from collab.client import Client
from collab.doc import Doc
from collab.errors import InvalidEvent
from collab.events import GENESIS, check_feed
from collab.keys import Keypair
from collab.replay import fetch_records, replay
from relay.endpoints.http_state import StateCache
from relay.ops.runner import Running


async def _write_doc(url: str, feed: str, lines: int) -> list[str]:
    """One signed edit per line; returns the text after each seq (index 0 = before any)."""
    texts = [""]
    async with Client(url, Keypair.generate()) as client, Doc(client, feed) as doc:
        await doc.synced(10)
        for i in range(lines):
            doc.text.insert(0 if i % 3 == 0 else len(str(doc.text)), f"line {i}\n")
            texts.append(str(doc.text))
        await doc.flushed(10)
    return texts


def _cache(relay: Running, **kw: int) -> StateCache:
    cache = StateCache(**kw)
    relay.server.config.app.state.state_cache = cache  # type: ignore[attr-defined]
    return cache


async def test_state_at_every_seq_matches_a_local_replay(relay: Running) -> None:
    feed = "doc/tt"
    texts = await _write_doc(relay.url, feed, 12)
    cache = _cache(relay, checkpoint_every=5)
    records = await fetch_records(relay.url, feed)
    async with httpx.AsyncClient(base_url=relay.url) as http:
        for at in range(13):
            r = await http.get(f"/feeds/{feed}/state", params={"at": at})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["feed"] == feed and body["seq"] == 12 and body["at"] == at
            assert body["state"] == {"text": texts[at]}
            expected = replay(records, at=at) if at else None
            assert body["hash"] == (expected.head if expected else GENESIS)
            if expected:
                assert expected.view() == body["state"]
        # default and beyond the head: the head (from the live state, no replay)
        before = cache.replayed
        for params in ({}, {"at": 12}, {"at": 10**9}):
            body = (await http.get(f"/feeds/{feed}/state", params=params)).json()
            assert body["at"] == 12 and body["state"] == {"text": texts[12]}
        assert cache.replayed == before


async def test_replays_resume_from_checkpoints_and_answers_are_cached(relay: Running) -> None:
    feed = "doc/ck"
    texts = await _write_doc(relay.url, feed, 25)
    cache = _cache(relay, checkpoint_every=10, max_replay=15)
    async with httpx.AsyncClient(base_url=relay.url) as http:
        async def state(at: int) -> httpx.Response:
            return await http.get(f"/feeds/{feed}/state", params={"at": at})

        r = await state(20)  # 20 records from seq 0: over the limit of 15
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        assert (await state(12)).json()["state"] == {"text": texts[12]}  # leaves a checkpoint at 10
        assert cache.replayed == 12
        assert (await state(20)).json()["state"] == {"text": texts[20]}  # from 10: 10 records
        assert cache.replayed == 22
        assert (await state(23)).json()["state"] == {"text": texts[23]}  # from 20: 3 records
        assert cache.replayed == 25
        assert (await state(12)).json()["state"] == {"text": texts[12]}  # cached answer
        assert (await state(11)).json()["state"] == {"text": texts[11]}  # from 10: 1 record
        assert cache.replayed == 26


async def test_bad_requests(relay: Running) -> None:
    async with Client(relay.url, Keypair.generate()) as client:
        await client.publish("doc/m", "feed.policy", {"policy": "members"})
        await client.publish("chat/g", "chat.msg", {"text": "hi"})
        await client.publish("chat/g", "chat.msg", {"text": "again"})
    async with httpx.AsyncClient(base_url=relay.url) as http:
        assert (await http.get("/feeds/doc/m/state")).status_code == 403
        assert (await http.get("/feeds/doc/none/state")).status_code == 404
        for bad in ("-1", "x", "1.5", " 1", str(2**53 + 1)):
            r = await http.get("/feeds/chat/g/state", params={"at": bad})
            assert r.status_code == 400 and r.json()["error"] == "invalid"
        # a feed whose last segment is "state" cannot exist, so this path is unambiguous
        assert (await http.get("/feeds/doc/a/state/state")).status_code == 400
        assert (await http.get("/feeds/doc/a/state")).status_code == 404
        # generic feeds have no view: null, with the hash of the record asked for
        records = await fetch_records(relay.url, "chat/g")
        body = (await http.get("/feeds/chat/g/state", params={"at": 1})).json()
        assert body["state"] is None and body["at"] == 1 and body["hash"] == replay(records, at=1).head


@pytest.mark.parametrize("feed", ["doc/state", "doc/a/state", "x/y/z/state"])
def test_feed_names_may_not_end_in_state(feed: str) -> None:
    with pytest.raises(InvalidEvent):
        check_feed(feed)
    check_feed(feed + "s")
    check_feed(feed + "/x")
