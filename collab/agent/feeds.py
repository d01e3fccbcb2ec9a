"""Feed and document actions of :class:`collab.agent.Agent`: list, read, publish, wait; read and
edit a document's text as Yjs edits (so concurrent edits by other agents merge)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pycrdt import Doc as YDoc
from pycrdt import Text

from ..doc import Doc
from ..errors import InvalidEvent
from ..events import Record, Snapshot, check_feed, namespace_of, unb64
from ..namespaces.doc import TEXT_ROOT
from .core import AgentCore, _bound, ack_json, record_json


def _utf8(text: str, index: int) -> int:
    """pycrdt's Text counts UTF-8 bytes; agents count characters."""
    return len(text[:index].encode("utf-8"))


def _doc_feed(feed: str) -> str:
    if namespace_of(check_feed(feed)) != "doc":
        raise InvalidEvent(f"documents are doc/ feeds, not {feed!r}")
    return feed


class FeedActions(AgentCore):
    # -- feeds -------------------------------------------------------------------------------
    async def list_feeds(self, prefix: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """Feeds with records whose id starts with ``prefix``: ``{feed, seq, head, rtime,
        subscribers, participants}`` each (private feeds this key may not read are hidden)."""
        _bound("limit", limit, 1, 10_000)
        data = await self.get_json("/feeds", {"prefix": prefix, "limit": limit})
        return list(data.get("feeds", []))

    async def read_feed(self, feed: str, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Records after ``since`` (at most ``limit``), verified: ``{feed, seq, id, kind, author, ts,
        rtime, body}``. Page on by passing the last ``seq`` as ``since``."""
        return [record_json(r) for r in await self.records(feed, since, limit)]

    async def publish(self, feed: str, kind: str, body: Any) -> dict[str, Any]:
        """Sign and publish one event; returns once stored: ``{feed, id, seq, dup}``."""
        check_feed(feed)
        return ack_json(await self.client.publish(feed, kind, body), feed)

    async def wait_feed(self, feed: str, since: int = 0,
                        timeout: float = 30.0) -> list[dict[str, Any]] | dict[str, Any]:
        """The records after ``since`` as soon as there is at least one (those already stored come
        at once), or ``{"feed", "since", "timeout": true}`` when none came within ``timeout`` s."""
        check_feed(feed)
        _bound("since", since, 0, 2**53)
        first = await self.records(feed, since)
        if first:
            return [record_json(r) for r in first]
        out: list[dict[str, Any]] = []
        async with self.lock(feed):
            sub = await self.client.subscribe(feed, since)
            try:
                try:
                    async with asyncio.timeout(timeout):
                        async for item in sub:
                            if isinstance(item, Record) and item.seq > since:
                                out.append(record_json(item))
                            if out and not sub.queued:
                                break
                except TimeoutError:
                    pass
            finally:
                await sub.close()
        return out or {"feed": feed, "since": since, "timeout": True}

    # -- documents ---------------------------------------------------------------------------
    async def doc_state(self, feed: str) -> tuple[YDoc[Any], int, str | None]:
        """The merged document of ``feed`` as a pycrdt Doc, with the seq and head it covers (seq 0:
        the feed has no records). Needs no key: it follows the feed like any reader."""
        _doc_feed(feed)
        ydoc: YDoc[Any] = YDoc()

        def on_snapshot(snap: Snapshot) -> None:
            if snap.state:
                ydoc.apply_update(snap.state)

        def on_record(rec: Record) -> None:
            if rec.event.kind == "doc.update":
                ydoc.apply_update(unb64(rec.event.body["update"]))

        async with self.lock(feed):
            sub = await self.client.subscribe(feed, on_record=on_record, on_snapshot=on_snapshot)
            try:
                await sub.wait_synced(self.timeout)
                seq, head = sub.seq, sub.head
            finally:
                await sub.close()
        return ydoc, seq, head

    async def doc_read(self, feed: str) -> dict[str, Any]:
        """``{feed, seq, text}``: the merged root Y.Text "text" (seq 0: the feed has no records)."""
        ydoc, seq, _ = await self.doc_state(feed)
        return {"feed": feed, "seq": seq, "text": str(ydoc.get(TEXT_ROOT, type=Text))}

    async def doc_append(self, feed: str, text: str) -> dict[str, Any]:
        """Append ``text`` at the end of the document's text."""
        return await self._edit(feed, lambda t, s: t.insert(len(t), text))

    async def doc_insert(self, feed: str, index: int, text: str) -> dict[str, Any]:
        """Insert ``text`` before character ``index`` (0: the start; the text's length: the end)."""
        def edit(t: Text, s: str) -> None:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= len(s):
                raise InvalidEvent(f"index {index} is outside the text (0..{len(s)} characters)")
            t.insert(_utf8(s, index), text)
        return await self._edit(feed, edit)

    async def doc_replace(self, feed: str, old: str, new: str) -> dict[str, Any]:
        """Replace the one occurrence of ``old`` by ``new``; refused (``invalid``) when ``old`` is
        empty, absent or occurs more than once (quote more context to make it unique)."""
        def edit(t: Text, s: str) -> None:
            if not old:
                raise InvalidEvent("the text to replace is empty")
            n = s.count(old)
            if n != 1:
                raise InvalidEvent(f"the text to replace occurs {n} times in {feed}, not once"
                                   + ("" if n else f" (the document has {len(s)} characters)"))
            at = s.index(old)
            start, end = _utf8(s, at), _utf8(s, at + len(old))
            del t[start:end]
            if new:
                t.insert(start, new)
        return await self._edit(feed, edit)

    async def _edit(self, feed: str, edit: Callable[[Text, str], None]) -> dict[str, Any]:
        """Apply ``edit(text, current)`` to the merged document as one transaction (one signed
        ``doc.update``) and wait for its ack."""
        _doc_feed(feed)
        self.me  # noqa: B018 - refuse early without a key
        async with self.lock(feed), Doc(self.client, feed, flush_timeout=self.timeout) as doc:
            await doc.synced(self.timeout)
            with doc.ydoc.transaction():
                edit(doc.text, str(doc.text))
            seq = await doc.flushed(self.timeout)
            return {"feed": feed, "seq": max(seq, doc.seq), "text": str(doc.text)}
