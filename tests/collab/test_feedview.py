"""collab/feedview.py against a real relay: the local fold of a feed, waiting on its state,
listeners, and several views of one feed sharing one subscription."""
from __future__ import annotations

from typing import Any

import pytest

from collab.client import Client
from collab.events import Record
from collab.feedview import FeedView
from collab.keys import Keypair
from collab.namespaces.generic import GenericNamespace
from relay.ops.runner import Running


async def test_the_view_folds_every_record_and_waits_on_its_state(relay: Running) -> None:
    writer, reader = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, writer) as w, Client(relay.url, reader) as r:
        for i in range(3):
            await w.publish("misc/fv", "note", {"i": i})
        seen: list[tuple[int, Any, Any]] = []
        view: FeedView[int] = FeedView(r, "misc/fv", GenericNamespace())
        assert view.state == 0 and view.seq == 0 and view.records == []
        view.listeners.append(lambda rec, before, after: seen.append((rec.seq, before, after)))
        async with view:
            await view.wait_synced(10)
            assert await view.wait_for(lambda s: s == 3, 10) == 3
            await w.publish("misc/fv", "note", {"i": 3})
            assert await view.wait_for(lambda s: s >= 4, 10) == 4
            assert view.seq == 4
            assert [rec.event.body for rec in view.records] == [{"i": i} for i in range(4)]
            assert all(isinstance(rec, Record) for rec in view.records)
        assert seen == [(1, 0, 1), (2, 1, 2), (3, 2, 3), (4, 3, 4)]  # in order, each once
        assert view.seq == 0  # closed: back to the initial view


async def test_two_views_of_one_feed_share_one_fold(relay: Running) -> None:
    key = Keypair.generate()
    async with Client(relay.url, key) as c:
        a: FeedView[int] = FeedView(c, "misc/shared", GenericNamespace())
        b: FeedView[int] = FeedView(c, "misc/shared", GenericNamespace())
        await a.start()
        await b.start()
        await c.publish("misc/shared", "note", {})
        assert await a.wait_for(lambda s: s == 1, 10) == 1
        assert b.state == 1 and a.records is b.records
        with pytest.raises(RuntimeError, match="already started"):
            await a.start()
        await a.close()
        await c.publish("misc/shared", "note", {})
        assert await b.wait_for(lambda s: s == 2, 10) == 2  # the other view keeps the subscription
        await b.close()
        await b.close()  # closing twice is harmless
        with pytest.raises(RuntimeError, match="start the view"):
            await b.wait_for(lambda s: True, 1)


async def test_the_namespace_comes_from_the_feed_and_timeouts_raise(relay: Running) -> None:
    async with Client(relay.url, Keypair.generate()) as c:
        async with FeedView[Any](c, "misc/empty") as view:
            await view.wait_synced(10)
            assert view.state == 0 and isinstance(view.ns, GenericNamespace)
            with pytest.raises(TimeoutError):
                await view.wait_for(lambda s: s > 0, 0.2)
            assert c.key is not None and view.participants <= {c.key.public_hex}
