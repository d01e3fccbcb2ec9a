"""The connection half of :class:`collab.agent.Agent`: one long-lived authenticated client, one
HTTP client, signed reads, and the conversions every action shares (acks and records as JSON).

Failures come out as :mod:`collab.errors`: a refusal by the relay as :class:`RelayError` (or
another ColonyError) carrying the relay's code, a relay that does not answer as
:class:`Unreachable` naming the URL. Nothing else escapes on purpose.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx
from websockets.exceptions import InvalidHandshake

from ..client import Client
from ..errors import AuthRequired, BadSignature, ChainError, ColonyError, InvalidEvent, RelayError, Unreachable
from ..events import Record, check_feed, now_ms
from ..httpauth import authorization
from ..keys import Keypair
from ..protocol import Ack
from ..replay import parse_records
from ..urls import http_base

if TYPE_CHECKING:
    from ..tasks import TaskWorker

DEFAULT_TIMEOUT = 30.0


def ack_json(ack: Ack, feed: str) -> dict[str, Any]:
    return {"feed": ack.feed or feed, "id": ack.id, "seq": ack.seq, "dup": ack.dup}


def record_json(rec: Record) -> dict[str, Any]:
    """A verified record as an agent reads it (the signatures are checked, so they are left out)."""
    ev = rec.event
    return {"feed": ev.feed, "seq": rec.seq, "id": ev.id, "kind": ev.kind, "author": ev.author,
            "ts": ev.ts, "rtime": rec.rtime, "body": ev.body}


def _bound(name: str, value: int, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidEvent(f"{name} must be an integer between {lo} and {hi}")
    return value


class AgentCore:
    """Holds the connections; :class:`collab.agent.Agent` adds the namespace actions."""

    def __init__(self, url: str, key: Keypair | None = None, *, reconnect: bool = True,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = http_base(url)
        self.key, self.reconnect, self.timeout = key, reconnect, timeout
        self._client: Client | None = None
        self._http: httpx.AsyncClient | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._workers: dict[tuple[str, str], TaskWorker] = {}  # subtasks heartbeating (task_resume)

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._http = httpx.AsyncClient(timeout=self.timeout)
        client = Client(self.url, self.key, reconnect=self.reconnect, open_timeout=self.timeout)
        try:
            self._client = await client.__aenter__()
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            await self._http.aclose()
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from None
        except BaseException:
            await self._http.aclose()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        close_leases = getattr(self, "close_leases", None)  # collab.agent.lease: resign held leases
        if close_leases is not None and self._client is not None:
            await close_leases()
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            await worker.close_beat()
        client, self._client = self._client, None
        http, self._http = self._http, None
        try:
            if client is not None:
                await client.aclose()
        finally:
            if http is not None:
                await http.aclose()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise ColonyError("enter the Agent (async with) before using it")
        return self._client

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise ColonyError("enter the Agent (async with) before using it")
        return self._http

    @property
    def me(self) -> str:
        """This agent's public key (hex)."""
        if self.key is None:
            raise AuthRequired("this action signs events: the Agent needs a key")
        return self.key.public_hex

    def lock(self, feed: str) -> asyncio.Lock:
        """One subscription per feed per client: actions that follow a feed take its lock."""
        lock = self._locks.get(feed)
        if lock is None:
            lock = self._locks[feed] = asyncio.Lock()
        return lock

    # -- HTTP --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def mapped(self) -> Iterator[None]:
        """HTTP failures as ColonyErrors: no answer -> Unreachable, an error status -> RelayError."""
        try:
            yield
        except httpx.TransportError as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from None
        except httpx.HTTPStatusError as exc:
            raise _refusal(exc.response) from None

    async def get_json(self, path: str, params: dict[str, Any] | None = None, *, missing: Any = None) -> Any:
        """``GET {url}{path}``, signed by the agent's key when it has one (docs/protocol.md 15.1,
        so private feeds it may read are shown); a 404 returns ``missing`` when it is not None."""
        headers: dict[str, str] = {}
        if self.key is not None and self.client.relay:
            headers["authorization"] = authorization(self.key, self.client.relay, "GET", path, now_ms())
        with self.mapped():
            resp = await self.http.get(self.url + path, params=params, headers=headers)
        if resp.status_code == 404 and missing is not None:
            return missing
        if resp.status_code != 200:
            raise _refusal(resp)
        try:
            return resp.json()
        except ValueError:
            raise RelayError("malformed", f"{path}: the relay's answer is not JSON") from None

    async def records(self, feed: str, since: int = 0, limit: int = 100) -> list[Record]:
        """Up to ``limit`` records of ``feed`` after ``since``, each verified (author signature, id,
        relay receipt) and linked to the one before; a record that fails raises."""
        check_feed(feed)
        _bound("since", since, 0, 2**53)
        _bound("limit", limit, 1, 1000)
        data = await self.get_json(f"/feeds/{feed}/events", {"since": since, "limit": limit})
        recs, anomalies = parse_records(data.get("records", []) if isinstance(data, dict) else [])
        if anomalies:
            a = anomalies[0]
            raise BadSignature(f"{feed}#{a.seq}: {a.kind}: {a.detail}")
        prev: Record | None = None
        for rec in recs:
            if rec.feed != feed or rec.seq <= since:
                raise InvalidEvent(f"the relay answered {rec.feed}#{rec.seq} to a read of {feed} after {since}")
            if prev is not None and (rec.seq != prev.seq + 1 or rec.prev != prev.hash):
                raise ChainError(f"{feed}#{rec.seq} does not link to #{prev.seq}")
            prev = rec
        return recs


def _refusal(resp: httpx.Response) -> RelayError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return RelayError(body["error"], str(body.get("message", "")))
    return RelayError(f"http_{resp.status_code}", resp.text[:200])
