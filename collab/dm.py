"""Direct messages: the feed name of a pair and the NaCl boxes of ``dm.msg`` (docs/coordination.md).

A message's plaintext is the canonical JSON ``{"kind": "request"|"response", "body": any}``,
boxed (``crypto_box``: X25519 + XSalsa20-Poly1305) between the X25519 keys derived from the
two Ed25519 keys. The shared key is symmetric, so both A and B open every message of their
feed (their own included) and nobody else can, the relay neither: it only orders boxes.
Who wrote a message is the event's signed ``author``, not anything inside the box.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any, Literal

import nacl.exceptions
import nacl.utils
from nacl.public import Box, PublicKey
from nacl.signing import VerifyKey

from .canonical import canonical, parse_json
from .errors import CanonicalError, ColonyError, InvalidEvent
from .events import HEX64_RE, Event, b64
from .keys import Keypair
from .namespaces.dm import NONCE_BYTES, check_msg, parse_dm_feed

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger(__name__)

MessageKind = Literal["request", "response"]
MESSAGE_KINDS = ("request", "response")


def dm_feed(a: str, b: str) -> str:
    """The feed of the pair ``{a, b}`` (either order): ``dm/<lower>.<higher>``."""
    if not isinstance(a, str) or not isinstance(b, str):
        raise InvalidEvent("dm keys are 64 lowercase hex chars")
    lo, hi = sorted((a, b))
    feed = f"dm/{lo}.{hi}"
    parse_dm_feed(feed)  # both keys, and two different ones
    return feed


def _box_public_key(key_hex: str) -> PublicKey:
    """The X25519 public key of an Ed25519 key (``crypto_sign_ed25519_pk_to_curve25519``)."""
    if not isinstance(key_hex, str) or not HEX64_RE.match(key_hex):
        raise InvalidEvent("a key is 64 lowercase hex chars")
    try:
        return VerifyKey(bytes.fromhex(key_hex)).to_curve25519_public_key()
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise InvalidEvent("not an Ed25519 public key (no X25519 equivalent)") from exc


def seal_message(sender: Keypair, recipient_hex: str, kind: MessageKind, body: Any, re: str | None = None,
                 *, nonce: bytes | None = None) -> dict[str, Any]:
    """The ``dm.msg`` body carrying ``{"kind", "body"}`` from ``sender`` to ``recipient_hex``.

    ``re`` links a response to its request's event id. ``nonce`` (24 bytes) defaults to a
    random one; pass it only for reproducible tests (a nonce must never repeat for a pair).
    Publish the result with ``Event.create(sender, dm_feed(...), "dm.msg", body)``.
    """
    if kind not in MESSAGE_KINDS:
        raise InvalidEvent("a message's kind is request or response")
    if re is not None and (not isinstance(re, str) or not HEX64_RE.match(re)):
        raise InvalidEvent("re must be an event id (64 lowercase hex chars)")
    dm_feed(sender.public_hex, recipient_hex)  # refuses a malformed key or a message to oneself
    try:
        plaintext = canonical({"kind": kind, "body": body})
    except CanonicalError as exc:
        raise InvalidEvent(f"message body is not canonical JSON: {exc}") from exc
    nonce = nacl.utils.random(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise InvalidEvent(f"nonce must be {NONCE_BYTES} bytes")
    box = Box(sender.box_private_key(), _box_public_key(recipient_hex))
    out = {"nonce": b64(nonce), "box": b64(box.encrypt(plaintext, nonce).ciphertext)}
    if re is not None:
        out["re"] = re
    return out


def open_message(me: Keypair, event: Event) -> tuple[str, Any]:
    """``(kind, body)`` of a ``dm.msg`` in a feed of ``me``'s; raise InvalidEvent if ``me`` is
    not one of its two keys, the event is malformed, or the box does not open."""
    if event.kind != "dm.msg":
        raise InvalidEvent("not a dm.msg event")
    a, b = parse_dm_feed(event.feed)
    if me.public_hex not in (a, b):
        raise InvalidEvent("this key is not a member of the dm feed")
    if event.author not in (a, b):
        raise InvalidEvent("the message's author is not a member of the dm feed")
    nonce, boxed, _ = check_msg(event.body)
    peer = b if me.public_hex == a else a
    try:
        plaintext = Box(me.box_private_key(), _box_public_key(peer)).decrypt(boxed, nonce)
    except nacl.exceptions.CryptoError as exc:
        raise InvalidEvent("the box does not open with this key (tampered, or not for this pair)") from exc
    try:
        msg = parse_json(plaintext)
    except (CanonicalError, ValueError) as exc:
        raise InvalidEvent("the plaintext is not JSON") from exc
    if not isinstance(msg, dict) or set(msg) != {"kind", "body"} or msg["kind"] not in MESSAGE_KINDS \
            or canonical(msg) != plaintext:
        raise InvalidEvent('the plaintext is not canonical {"kind": "request"|"response", "body": any}')
    return msg["kind"], msg["body"]


class DirectChannel:
    """Request/response with one peer over ``dm/<A>.<B>``: ``await ch.request(body)`` returns
    the peer's response body; ``ch.serve(handler)`` answers the peer's requests.

    Messages are sealed and opened here, so the relay (and anyone reading the feed) sees only
    boxes; a message that does not open is skipped and logged, never delivered.

    The channel follows the feed from its start, so a request the peer sent while this side
    was away is answered once the channel is open and serving (``serve`` may be called before
    or after entering). A request is answered once: requests that already have a response of
    ours in the feed are not answered again, and answers wait until the backlog is delivered
    (``synced``), since a response is always sequenced after its request.
    """

    def __init__(self, client: Client, peer: str) -> None:
        if client.key is None:
            raise InvalidEvent("a direct channel needs a client with a key")
        self.client, self.peer = client, peer
        self.me: Keypair = client.key
        self.feed = dm_feed(self.me.public_hex, peer)
        self._waiting: dict[str, Any] = {}  # request id -> future of the response body
        self._handler: Any = None
        self._sub: Any = None
        self.received: list[tuple[str, str, Any]] = []  # (author, kind, body), in feed order
        self._unanswered: dict[str, Any] = {}  # the peer's requests without a response of ours, by id
        self._answered: set[str] = set()  # request ids we responded to (in the feed, or being sent)
        self._tasks: set[Any] = set()  # running handlers (and the wait for the backlog)
        self._sync_waiter: Any = None

    async def __aenter__(self) -> DirectChannel:
        self.received, self._unanswered, self._answered = [], {}, set()  # the feed is read from its start
        self._sub = await self.client.subscribe(self.feed, on_record=self._on_record)
        await self._sub.wait_synced(30)
        self._answer_unanswered()
        return self

    async def __aexit__(self, *exc: object) -> None:
        sub, self._sub = self._sub, None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if sub is not None:
            await sub.close()

    def serve(self, handler: Any) -> None:
        """``handler(body) -> response body`` (sync or async) answers each request from the peer,
        including those waiting in the feed when the channel was opened."""
        self._handler = handler
        self._answer_unanswered()

    async def send(self, kind: MessageKind, body: Any, re: str | None = None) -> Event:
        ev = self.client.create_event(self.feed, "dm.msg", seal_message(self.me, self.peer, kind, body, re))
        await self.client.publish_event(ev)
        return ev

    async def request(self, body: Any, timeout: float | None = 30.0) -> Any:
        if self._sub is None:
            raise InvalidEvent("open the channel (async with) before sending a request: the response comes by it")
        ev = self.client.create_event(self.feed, "dm.msg", seal_message(self.me, self.peer, "request", body))
        fut = asyncio.get_running_loop().create_future()
        self._waiting[ev.id] = fut
        try:
            await self.client.publish_event(ev)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(ev.id, None)

    def _on_record(self, rec: Any) -> None:
        ev = rec.event
        try:
            kind, body = open_message(self.me, ev)
        except InvalidEvent as exc:
            log.warning("dm %s#%d skipped: %s", self.feed, rec.seq, exc)
            return
        self.received.append((ev.author, kind, body))
        re = ev.body.get("re") if isinstance(ev.body, dict) else None
        if ev.author == self.me.public_hex:
            if kind == "response" and isinstance(re, str):  # answered (maybe by an earlier run)
                self._answered.add(re)
                self._unanswered.pop(re, None)
            return
        if kind == "response" and re in self._waiting and not self._waiting[re].done():
            self._waiting[re].set_result(body)
        elif kind == "request" and ev.id not in self._answered:
            self._unanswered[ev.id] = body
            self._answer_unanswered()

    def _spawn(self, coro: Any) -> Any:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # a reference, so the task is not garbage collected mid-flight
        task.add_done_callback(self._done)
        return task

    def _done(self, task: Any) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dm %s: answering a request failed", self.feed,
                                              exc_info=task.exception())

    def _answer_unanswered(self) -> None:
        """Answer the waiting requests, once the backlog is in (a response of ours may follow)."""
        sub = self._sub
        if self._handler is None or sub is None or not self._unanswered:
            return
        if not sub.synced:  # catching up (first subscription or a reconnect): answer when live
            if self._sync_waiter is None or self._sync_waiter.done():
                self._sync_waiter = self._spawn(self._after_sync(sub))
            return
        for request_id, body in list(self._unanswered.items()):
            del self._unanswered[request_id]
            self._answered.add(request_id)
            self._spawn(self._answer(request_id, body))

    async def _after_sync(self, sub: Any) -> None:
        try:
            await sub.wait_synced()
        except ColonyError:  # the subscription ended: nothing to answer on it
            return
        if sub is self._sub:
            self._answer_unanswered()

    async def _answer(self, request_id: str, body: Any) -> None:
        reply = self._handler(body)
        if inspect.isawaitable(reply):
            reply = await reply
        await self.send("response", reply, re=request_id)
