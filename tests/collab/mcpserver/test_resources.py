"""Feed resources and the relay watches behind them, in process against a real relay: a follower
notified after each record of its feed only, one relay watch per prefix however many listen,
waits for new feeds, and ``GET /feeds/{feed}`` as the resource's JSON."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collab.agent import Agent
from collab.events import GENESIS
from collab.keys import Keypair
from collab.mcpserver.resources import Announcements, FeedFollower, feed_info, feed_of, uri_of
from relay.ops.runner import Running, serving
from tests.conftest import make_config


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Running]:
    async with serving(make_config(tmp_path / "relay")) as running:
        yield running


def test_feed_uris() -> None:
    assert uri_of("doc/a/b") == "colony://feed/doc/a/b" and feed_of(uri_of("doc/a/b")) == "doc/a/b"
    for bad in ("colony://feed/", "colony://feed/Doc", "http://x/doc/a", "colony://feed/doc/a/.."):
        with pytest.raises(ValueError, match=r"colony://feed|bad feed id"):
            feed_of(bad)


async def test_followers_hear_their_feed_and_share_one_watch(relay: Running) -> None:
    async with Agent(relay.url, Keypair.generate()) as me, Agent(relay.url, Keypair.generate()) as other:
        ann = Announcements(me.client)
        heard: asyncio.Queue[str] = asyncio.Queue()

        async def on_record(feed: str) -> None:
            heard.put_nowait(feed)

        follower = FeedFollower(ann, on_record)
        await follower.acquire("chat/a")
        await follower.acquire("chat/a")  # a second subscriber: the same watch
        assert follower.feeds == ["chat/a"] and list(me.client._watches.handlers) == ["chat/a"]
        await other.publish("chat/ab", "note.added", 0)  # under the prefix `chat/a`, another feed
        await other.publish("chat/a", "note.added", 1)
        assert await asyncio.wait_for(heard.get(), 10) == "chat/a"
        await me.publish("chat/a", "note.added", 2)  # its own records too
        assert await asyncio.wait_for(heard.get(), 10) == "chat/a"
        assert heard.empty()
        follower.release("chat/a")
        assert follower.feeds == ["chat/a"]  # one subscriber left
        follower.release("chat/a")
        assert follower.feeds == []
        await ann.aclose()  # the unwatch sent in the background has been answered
        assert me.client._watches.handlers == {}
        await follower.aclose()


async def test_waiting_for_new_feeds_and_reading_feed_info(relay: Running) -> None:
    async with Agent(relay.url, Keypair.generate()) as me, Agent(relay.url, Keypair.generate()) as other:
        ann = Announcements(me.client)
        await other.publish("news/old", "story.posted", 1)
        watching = asyncio.Event()

        async def on_watching() -> None:
            watching.set()

        waiter = asyncio.ensure_future(ann.wait_new_feeds("news/", 20, on_watching))
        await asyncio.wait_for(watching.wait(), 10)
        await other.publish("news/old", "story.posted", 2)  # not a new feed
        await other.publish("news/fresh", "story.posted", 1)
        got = await waiter
        assert got["prefix"] == "news/" and not got["timed_out"]
        assert [f["feed"] for f in got["feeds"]] == ["news/fresh"] and got["feeds"][0]["kind"] == "story.posted"
        assert await ann.wait_new_feeds("news/", 0.05) == {"prefix": "news/", "feeds": [], "timed_out": True}

        info = await feed_info(me, "news/fresh")
        assert (info["feed"], info["seq"], info["state"]) == ("news/fresh", 1, None) and len(info["head"]) == 64
        assert await feed_info(me, "news/none") == {"feed": "news/none", "seq": 0, "head": GENESIS, "rtime": None,
                                                    "state": None}
        await me.doc_append("doc/d", "hi")
        assert (await feed_info(me, "doc/d"))["state"] == {"text": "hi"}
        await ann.aclose()
