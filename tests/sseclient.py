"""A Server-Sent Events client for tests: httpx streaming, parsed as the HTML standard's
EventSource does (fields ``event``, ``data``, ``id``, ``retry``; comments; a blank line
dispatches), keeping every event and comment in order."""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None   # the last event id after this event (as EventSource keeps it)

    def json(self) -> Any:
        return json.loads(self.data)


class SseStream:
    """One open stream: ``next()`` returns its events one by one; ``comments`` and ``retry``
    record what else came."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        self.headers = response.headers
        self.comments: list[str] = []
        self.retry: int | None = None
        self.last_id: str | None = None
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 10.0) -> SseEvent | None:
        """The next event, or None when the relay ended the response."""
        got = await self._read(timeout, False)
        assert not isinstance(got, str)
        return got

    async def comment(self, timeout: float = 10.0) -> str:
        """The next comment line (events before it are dropped)."""
        got = await self._read(timeout, True)
        assert isinstance(got, str), got
        return got

    async def _read(self, timeout: float, comments: bool) -> SseEvent | str | None:
        event, data, last_id = "", list[str](), self.last_id
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line == "":
                    self.last_id = last_id  # the position moves when an event is dispatched, not before
                    if not data:  # nothing to dispatch (the standard resets and goes on)
                        event = ""
                        continue
                    ev = SseEvent(event or "message", "\n".join(data), self.last_id)
                    if comments:
                        event, data = "", []
                        continue
                    return ev
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    if comments:
                        return self.comments[-1]
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id" and "\0" not in value:
                    last_id = value
                elif name == "retry" and value.isdigit():
                    self.retry = int(value)
        return None

    async def until(self, event: str, timeout: float = 10.0) -> list[SseEvent]:
        """Every event up to and including the first ``event`` (fails at the end of the response)."""
        got: list[SseEvent] = []
        while True:
            ev = await self.next(timeout)
            assert ev is not None, f"the stream ended before a {event!r} event; got {got}"
            got.append(ev)
            if ev.event == event:
                return got


@contextlib.asynccontextmanager
async def open_stream(base_url: str, feed: str, *, since: int | None = None, last_event_id: str | None = None,
                      token: str | None = None, headers: dict[str, str] | None = None,
                      timeout: float = 10.0) -> AsyncIterator[SseStream]:
    """``GET /feeds/{feed}/stream``; the stream is closed (the connection dropped) on exit."""
    params: dict[str, Any] = {}
    if since is not None:
        params["since"] = since
    if token is not None:
        params["token"] = token
    hdrs = dict(headers or {})
    if last_event_id is not None:
        hdrs["last-event-id"] = last_event_id
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(timeout, read=None)) as http:
        async with http.stream("GET", f"/feeds/{feed}/stream", params=params, headers=hdrs) as resp:
            yield SseStream(resp)
