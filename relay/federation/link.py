"""The outbound half of a relay-to-relay link (docs/federation.md, "Links").

One :class:`Link` per peer keeps a WebSocket to the peer's ``/fed`` open for as long as this
relay runs: it proves this relay's key, checks the peer's, and reconnects with jittered
exponential backoff after any loss (``collab.reconnect``, as ``collab.Client`` does). Requests
that need an answer (``fwd``) wait on a future keyed by ``rid``; a loss fails them with
``HomeUnreachable`` at once, because the caller (``Federation.forward``) decides whether to wait
for the link or give up. Mirror subscriptions are remembered and re-sent after every reconnect
from the then-current seq.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from collab import frames
from collab.canonical import canonical
from collab.errors import ColonyError, HomeUnreachable, MalformedFrame, RelayError
from collab.events import HEX128_RE, Event
from collab.keys import Keypair, verify
from collab.reconnect import Next, Reconnecting, Writer, close_politely, recv_within
from collab.subscription import Signal, until

from relay.core.routing import Member

log = logging.getLogger(__name__)

PEER_DOMAIN = b"colony/peer/v1\n"
CLOSE_REFUSED = 4403
HANDSHAKE_TIMEOUT = 10.0
RECORD_QUEUE = 4096  # rec frames read but not yet handed to on_record (then the reader waits)


def peer_bytes(nonce: str, relay: str, key: str) -> bytes:
    """What ``key`` signs to prove itself to ``relay`` that sent ``nonce`` (both directions)."""
    return PEER_DOMAIN + canonical({"key": key, "nonce": nonce, "relay": relay})


def fed_url(url: str) -> str:
    """``http(s)://host:port[/prefix]`` -> ``ws(s)://host:port[/prefix]/fed``."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"a peer URL is http(s)://, not {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/fed", "", ""))


class Refused(ColonyError):
    """The handshake failed: wrong key, bad signature, or the peer does not know us."""


@dataclass(eq=False, slots=True)
class _Sub:
    feed: str
    since: Callable[[], int]
    on_record: Callable[[dict[str, Any]], Any]


class Link(Reconnecting):
    """A reconnecting, mutually authenticated connection to one peer's ``/fed``."""

    def __init__(self, relay_key: Keypair, peer: Member, *, backoff_base: float = 0.1,
                 backoff_max: float = 5.0) -> None:
        super().__init__(backoff_base, backoff_max)
        self.relay_key, self.peer = relay_key, peer
        self.url = fed_url(peer.url)
        # names this link (this relay process) in the handshake: the peer keeps one inbound link per
        # (key, process), so the processes of one site (same key, one Redis) each keep theirs
        self.process = os.urandom(8).hex()
        self.on_heads: list[Callable[[list[dict[str, Any]]], Any]] = []  # add_on_heads: the peer's heads
        self.on_connect: list[Callable[[], Any]] = []  # add_on_connect: after every handshake
        self.on_refused: list[Callable[[str, str], Any]] = []  # add_on_refused: (feed, code) of a refused sub
        self.refused_subs = 0  # mirror subscriptions the peer refused (e.g. its storage was down)
        self.last_error: str | None = None  # why the last attempt or connection ended (health, tests)
        self.connects = 0  # successful handshakes so far
        self._subs: dict[str, _Sub] = {}
        self._sub_rids: dict[str, str] = {}  # feed -> rid of its last sub frame (an error answering it ends it)
        self._pending: dict[str, asyncio.Future[tuple[int, bool]]] = {}
        self._rids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._writer: Writer | None = None
        self._up = asyncio.Event()
        self._changed = Signal()  # the link came up or was closed
        self._records: asyncio.Queue[tuple[_Sub, dict[str, Any]]] = asyncio.Queue(RECORD_QUEUE)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin connecting in the background (a peer that is down is retried forever)."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run_loop(), name=f"fed-link:{self.peer.url}")
            self._task.add_done_callback(self._ended)
            self._spawn(self._deliver_records())

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug: say so, loudly
            log.error("the link to %s stopped", self.url, exc_info=task.exception())

    async def close(self) -> None:
        self._closing = True
        self._changed.notify()  # wake wait_connected callers: they get HomeUnreachable
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_pending("the link to the peer relay is closed")

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def wait_connected(self, timeout: float | None) -> None:
        """Return once the handshake is done; TimeoutError after ``timeout`` seconds,
        HomeUnreachable if the link is closed meanwhile."""
        def check() -> None:
            if self._closing:
                raise HomeUnreachable(f"the link to {self.peer.url} is closed")

        await until(self._changed, self._up.is_set, check, timeout)

    # -- requests ----------------------------------------------------------------------------
    async def forward(self, event: Event, key: str | None, timeout: float = 30.0) -> tuple[int, bool]:
        """Publish ``event`` at the peer (the feed's home) as if ``key`` had sent it there."""
        if not self.connected:
            raise HomeUnreachable(f"the home relay {self.peer.url} is unreachable; retry later")
        rid = f"f{next(self._rids)}"
        fut: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._send({"t": "fwd", "event": event.to_wire(), "key": key, "rid": rid})
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                raise HomeUnreachable(f"the home relay {self.peer.url} did not answer in {timeout:g} s") from None
        finally:
            self._pending.pop(rid, None)

    def subscribe(self, feed: str, since: Callable[[], int], on_record: Callable[[dict[str, Any]], Any]) -> None:
        """Mirror ``feed``: records after ``since()`` now (if connected) and after every reconnect."""
        again = feed in self._subs
        sub = self._subs[feed] = _Sub(feed, since, on_record)
        if self.connected:
            if again:  # start over from the caller's current seq
                self._send({"t": "unsub", "feed": feed})
            self._send_sub(sub)

    def unsubscribe(self, feed: str) -> None:
        self._sub_rids.pop(feed, None)
        if self._subs.pop(feed, None) is not None and self.connected:
            self._send({"t": "unsub", "feed": feed})

    def add_on_connect(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` after every handshake (a coroutine it returns is run)."""
        self.on_connect.append(callback)

    def add_on_refused(self, callback: Callable[[str, str], Any]) -> None:
        """Call ``callback(feed, code)`` when the peer refuses a mirror subscription (an ``error``
        answering its ``sub``): the subscription is dropped, not resent; its owner decides when to
        subscribe again (without an owner it is simply gone, as the peer said)."""
        self.on_refused.append(callback)

    def add_on_heads(self, callback: Callable[[list[dict[str, Any]]], Any]) -> None:
        """Call ``callback(heads)`` with every ``heads`` frame the peer sends."""
        self.on_heads.append(callback)

    def drop(self, reason: str) -> None:
        """Cut the current connection (e.g. the peer sent a bad record); it reconnects with
        backoff and every subscription resumes from its ``since()``."""
        ws = self._ws
        if ws is not None:
            self._ws = None
            self._discard_records()  # nothing more from this connection reaches on_record
            log.warning("dropping the link to %s: %s", self.url, reason)
            self.last_error = f"dropped: {reason}"
            self._spawn(ws.close(1008, reason[:120]))

    def send_heads(self, heads: list[dict[str, Any]]) -> None:
        """Best effort: dropped when the link is down (the next interval sends them again)."""
        if self.connected and heads:
            self._send({"t": "heads", "heads": heads})

    # -- internals ---------------------------------------------------------------------------
    def _send_sub(self, sub: _Sub) -> None:
        rid = self._sub_rids[sub.feed] = f"s{next(self._rids)}"
        self._send({"t": "sub", "feed": sub.feed, "since": sub.since(), "rid": rid})

    def _send(self, frame: dict[str, Any]) -> None:
        """Queue on the current connection (what was queued for an earlier one was answered or failed)."""
        if self._writer is not None:
            self._writer.send(frames.encode(frame))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self) -> Next:
        try:
            ws = await connect(self.url, open_timeout=HANDSHAKE_TIMEOUT, close_timeout=2, max_size=None)
        except (OSError, WebSocketException, TimeoutError, EOFError) as exc:
            # e.g. a path that accepts TCP and then drops it: ConnectionClosedError from connect
            self.last_error = f"connect: {exc}"
            log.debug("connecting to peer %s failed: %s", self.url, exc)
            return Next.LATER
        try:
            await self._handshake(ws)
            await self._records.join()  # a record still being applied moves since()
            self._mark_up()
            self._writer = Writer(ws, name=f"fed-writer:{self.peer.url}")
            self._connected(ws)
            async for message in ws:
                await self._on_message(message)
            self.last_error = self.last_error or f"closed by peer ({ws.close_code} {ws.close_reason})"
        except Refused as exc:
            again = self.last_error == f"refused: {exc}"  # retried every backoff_max: say it once
            self.last_error = f"refused: {exc}"
            log.log(logging.DEBUG if again else logging.ERROR, "link to %s refused: %s", self.url, exc)
            await ws.close(CLOSE_REFUSED, str(exc)[:120])
        except (ConnectionClosed, OSError, TimeoutError, ColonyError) as exc:
            self.last_error = f"lost: {exc!r}"
            log.info("link to %s lost: %r", self.url, exc)
        except Exception:  # a bug of ours: logged; a fresh connection repairs the state
            self.last_error = "internal error"
            log.exception("link to %s failed unexpectedly", self.url)
        finally:
            self._disconnected()
            await close_politely(ws)
        return Next.LATER

    async def _handshake(self, ws: ClientConnection) -> None:
        me = self.relay_key.public_hex
        challenge = await self._recv_frame(ws)
        if challenge.get("t") != "challenge" or not isinstance(challenge.get("nonce"), str):
            raise Refused(f"expected a challenge, got {challenge.get('t')!r}")
        if challenge.get("relay") != self.peer.key:
            raise Refused(f"the relay at {self.peer.url} has key {str(challenge.get('relay'))[:16]}…, "
                          f"not the configured {self.peer.key[:16]}…")
        nonce = os.urandom(32).hex()
        sig = self.relay_key.sign(peer_bytes(challenge["nonce"], self.peer.key, me)).hex()
        await ws.send(frames.encode({"t": "peer", "key": me, "nonce": nonce, "sig": sig, "process": self.process}))
        answer = await self._recv_frame(ws)
        if answer.get("t") == "error":
            raise Refused(f"{answer.get('code')}: {answer.get('message')}")
        ssig = answer.get("sig")
        if answer.get("t") != "peer_ok" or not isinstance(ssig, str) or not HEX128_RE.match(ssig):
            raise Refused(f"expected peer_ok, got {answer.get('t')!r}")
        if not verify(bytes.fromhex(self.peer.key), peer_bytes(nonce, me, self.peer.key), bytes.fromhex(ssig)):
            raise Refused("the peer's peer_ok signature does not verify for its configured key")

    @staticmethod
    async def _recv_frame(ws: ClientConnection) -> dict[str, Any]:
        message = await recv_within(ws, HANDSHAKE_TIMEOUT)
        texts = frames.split(message)
        if len(texts) != 1:
            raise Refused("the handshake is one frame per message")
        try:
            return frames.parse(texts[0], allowed=None)
        except MalformedFrame as exc:
            raise Refused(str(exc)) from exc

    def _connected(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._up.set()
        self._changed.notify()
        self.connects += 1
        self.last_error = None
        for sub in self._subs.values():
            self._send_sub(sub)
        for callback in list(self.on_connect):
            try:
                result = callback()
                if inspect.isawaitable(result) and not isinstance(result, asyncio.Future):
                    self._spawn(result)  # a coroutine: run it; a task is its owner's to manage
            except Exception:
                log.exception("an on_connect callback of the link to %s failed", self.url)
        log.info("link to %s up", self.url)

    def _disconnected(self) -> None:
        was_up = self._up.is_set()
        self._ws = None
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self._up.clear()
        self._discard_records()  # not applied yet: resent after the resubscribe
        self._fail_pending(f"the link to {self.peer.url} dropped before the answer")
        if was_up:
            log.info("link to %s down", self.url)

    def _discard_records(self) -> None:
        while not self._records.empty():
            self._records.get_nowait()
            self._records.task_done()

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(HomeUnreachable(why))

    async def _on_message(self, message: str | bytes) -> None:
        for text in frames.split(message):
            frame = frames.parse(text, allowed=None)
            t = frame["t"]
            if t == "rec":
                sub = self._subs.get(frame.get("feed"))  # type: ignore[arg-type]
                if sub is not None and self._ws is not None and isinstance(frame.get("rec"), dict):
                    await self._records.put((sub, frame["rec"]))  # waits only when far behind
            elif t in ("ok", "error"):
                self._answer(frame)
            elif t == "heads":
                heads = frame.get("heads")
                if isinstance(heads, list):
                    for on_heads in list(self.on_heads):
                        try:
                            on_heads(heads)
                        except ColonyError as exc:  # over the heads limits: the next interval's go on
                            log.warning("heads from %s refused: %s", self.url, exc)
                        except Exception:
                            log.exception("handling heads from %s failed", self.url)
            elif t == "unsubbed" and frame.get("reason") and frame.get("feed") in self._subs:
                log.warning("peer %s ended the mirror subscription of %s (%s); resubscribing",
                            self.url, frame["feed"], frame["reason"])
                self._send_sub(self._subs[frame["feed"]])
            # synced, presence, pong: nothing to do on a mirror link

    def _answer(self, frame: dict[str, Any]) -> None:
        rid = frame.get("rid")
        fut = self._pending.get(rid) if isinstance(rid, str) else None
        if fut is None and frame["t"] == "error" and self._sub_refused(rid, frame):
            return
        if fut is None or fut.done():
            if frame["t"] == "error":
                log.warning("peer %s refused a request: %s %s (feed %s)", self.url, frame.get("code"),
                            frame.get("message"), frame.get("feed"))
        elif frame["t"] == "ok":
            seq = frame.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
                fut.set_result((seq, bool(frame.get("dup"))))
            else:
                fut.set_exception(RelayError("internal", "the peer's ok carries no seq"))
        else:
            code, msg = frame.get("code"), frame.get("message")
            fut.set_exception(RelayError(code if isinstance(code, str) else "internal",
                                         msg if isinstance(msg, str) else ""))

    def _sub_refused(self, rid: Any, frame: dict[str, Any]) -> bool:
        """An error answering the last ``sub`` of a feed: that subscription is over (else the
        mirror would wait forever for records the peer will not send, until the link drops)."""
        feed = next((f for f, r in self._sub_rids.items() if r == rid), None) if isinstance(rid, str) else None
        if feed is None:
            return False
        del self._sub_rids[feed]
        self._subs.pop(feed, None)
        self.refused_subs += 1
        code = frame.get("code") if isinstance(frame.get("code"), str) else "internal"
        log.warning("peer %s refused the mirror subscription of %s: %s %s", self.url, feed, code,
                    frame.get("message"))
        for callback in list(self.on_refused):
            try:
                callback(feed, str(code))
            except Exception:
                log.exception("an on_refused callback of the link to %s failed", self.url)
        return True

    async def _deliver_records(self) -> None:
        """Hand records to their subscriptions in arrival order (awaiting async callbacks)."""
        while True:
            sub, rec = await self._records.get()
            try:
                if self._subs.get(sub.feed) is sub:
                    result = sub.on_record(rec)
                    if inspect.isawaitable(result):
                        await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a mirrored record of %s from %s was not handled", sub.feed, self.url)
            finally:
                self._records.task_done()

