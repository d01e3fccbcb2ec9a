"""collab/agent/feeds.py: feed and document actions of one Agent against a real relay (both backends):
plain arguments in, JSON-able values out, ColonyErrors with the relay's code on refusal."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from collab.agent import Agent
from collab.errors import AuthRequired, InvalidEvent, RelayError
from collab.keys import Keypair


async def test_feeds_and_documents(relay: Any) -> None:
    a_key, b_key = Keypair.generate(), Keypair.generate()
    async with Agent(relay.url, a_key) as a, Agent(relay.url, b_key) as b, Agent(relay.url) as anon:
        ack = await a.publish("chat/x", "msg", {"text": "hi"})
        assert ack == {"feed": "chat/x", "id": ack["id"], "seq": 1, "dup": False}
        waiting = asyncio.ensure_future(b.wait_feed("chat/x", since=1, timeout=20))
        recs = await b.read_feed("chat/x")
        assert [(r["seq"], r["kind"], r["author"], r["body"]) for r in recs] == [(1, "msg", a_key.public_hex,
                                                                                 {"text": "hi"})]
        await a.publish("chat/x", "msg", {"text": "second"})
        got = await waiting
        assert isinstance(got, list) and [r["body"]["text"] for r in got] == ["second"]
        assert await b.wait_feed("chat/x", since=0, timeout=5) == await b.read_feed("chat/x")  # stored: at once
        assert await b.wait_feed("chat/x", since=2, timeout=0.3) == {"feed": "chat/x", "since": 2, "timeout": True}
        assert [f["feed"] for f in await anon.list_feeds("chat/")] == ["chat/x"]
        json.dumps(await anon.list_feeds())

        assert await anon.doc_read("doc/d") == {"feed": "doc/d", "seq": 0, "text": ""}
        assert (await a.doc_append("doc/d", "hello world"))["text"] == "hello world"
        assert (await b.doc_insert("doc/d", 5, ","))["text"] == "hello, world"
        r = await a.doc_replace("doc/d", "world", "colony 😀")
        assert r == {"feed": "doc/d", "seq": 3, "text": "hello, colony 😀"}
        assert (await b.doc_append("doc/d", "!"))["text"] == "hello, colony 😀!"  # indices in characters
        assert await anon.doc_read("doc/d") == {"feed": "doc/d", "seq": 4, "text": "hello, colony 😀!"}
        for old in ("absent", "o", ""):
            with pytest.raises(InvalidEvent):
                await a.doc_replace("doc/d", old, "x")
        with pytest.raises(InvalidEvent):
            await a.doc_insert("doc/d", 99, "x")
        with pytest.raises(AuthRequired):
            await anon.doc_append("doc/d", "x")
        with pytest.raises(InvalidEvent):
            await a.doc_append("chat/x", "x")  # not a doc/ feed
        # concurrent edits from two agents merge (Yjs), none is lost
        await asyncio.gather(a.doc_append("doc/d", " A"), b.doc_insert("doc/d", 0, "B "))
        text = (await anon.doc_read("doc/d"))["text"]
        assert text.startswith("B hello") and text.endswith("! A")

        await a.publish("chat/p", "feed.policy", {"policy": "members"})
        await a.publish("chat/p", "msg", {"text": "private"})
        with pytest.raises(RelayError) as err:
            await anon.read_feed("chat/p")
        assert err.value.code == "unauthorized"
        assert [r["seq"] for r in await a.read_feed("chat/p")] == [1, 2]  # signed reads
        with pytest.raises(RelayError) as err:
            await a.publish("chat/x", "feed.policy", {"policy": "nonsense"})
        assert err.value.code == "invalid"
