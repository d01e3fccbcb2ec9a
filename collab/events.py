"""Events, records and snapshots: canonical bytes, ids, signatures and the hash chain.

An *event* is what an author signs; a *record* is the relay's receipt that gives the event
its place (``seq``) in a feed and links it to the previous record (``prev``). All of the
byte layouts are normative and described in ``docs/protocol.md``.
"""
from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .canonical import MAX_SAFE_INT, _encode_str, canonical
from .errors import BadSignature, CanonicalError, InvalidEvent
from .keys import Keypair, verify

EVENT_DOMAIN = b"colony/event/v1\n"
RECORD_DOMAIN = b"colony/record/v1\n"
SNAPSHOT_DOMAIN = b"colony/snapshot/v1\n"
HELLO_DOMAIN = b"colony/hello/v1\n"
GENESIS = "0" * 64

# ``\Z``, not ``$``: ``$`` also matches before a trailing "\n", which let "doc/a\n" through.
FEED_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}/[A-Za-z0-9._~:@+=-][A-Za-z0-9._~:@+=/-]{0,199}\Z")
#: a watch prefix (docs/protocol.md 9.4): a prefix of some valid feed id, "" included
PREFIX_RE = re.compile(r"^(?:[a-z][a-z0-9_-]{0,31}(?:/(?:[A-Za-z0-9._~:@+=-][A-Za-z0-9._~:@+=/-]{0,199})?)?)?\Z")
KIND_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}\Z")
HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")
HEX128_RE = re.compile(r"^[0-9a-f]{128}\Z")
#: name segments a feed id may not have: dot segments are rewritten by URL normalisation, and a
#: last segment ``events``, ``state`` or ``stream`` makes ``GET /feeds/{feed}`` collide with
#: ``GET /feeds/{feed}/events``, ``GET /feeds/{feed}/state`` and ``GET /feeds/{feed}/stream``
RESERVED_SEGMENTS = frozenset((".", ".."))
RESERVED_LAST_SEGMENTS = frozenset(("events", "state", "stream"))
EVENT_FIELDS = frozenset(("feed", "kind", "author", "ts", "ctx", "body", "sig", "id"))
RECORD_FIELDS = frozenset(("seq", "prev", "rtime", "relay", "rsig", "event"))
SNAPSHOT_FIELDS = frozenset(("feed", "seq", "head", "state", "relay", "rsig"))
MAX_TS = 2**53 - 1
BAD_SIGNATURE = "signature does not verify for author"  # the message of a publish refused bad_signature


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def namespace_of(feed: str) -> str:
    return feed.split("/", 1)[0]


def check_feed(feed: Any) -> str:
    if not isinstance(feed, str) or not FEED_RE.match(feed) or "//" in feed or feed.endswith("/"):
        raise InvalidEvent("feed must look like '<namespace>/<name>' (see docs/protocol.md)")
    segments = feed.split("/")[1:]
    if RESERVED_SEGMENTS.intersection(segments):
        raise InvalidEvent("feed name segments may not be '.' or '..'")
    if segments[-1] in RESERVED_LAST_SEGMENTS:
        raise InvalidEvent(f"a feed name's last segment may not be '{segments[-1]}' (it would clash with "
                           f"GET /feeds/{{feed}}/{segments[-1]})")
    return feed


def check_prefix(prefix: Any) -> str:
    """A watch prefix: a string some valid feed id starts with (``""``: every feed; ``auction/``:
    one namespace; ``doc/spec-``: part of a name), so at most 233 characters of the feed id
    charset; raise InvalidEvent otherwise."""
    if not isinstance(prefix, str) or not PREFIX_RE.match(prefix) or "//" in prefix:
        raise InvalidEvent("prefix must be the start of a feed id, like 'auction/' (see docs/protocol.md 9.4)")
    return prefix


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _plain(*values: Any) -> bool:
    """Whether ``values`` are ASCII strs and safe ints only: their canonical text is then
    ``_encode_str(s)`` and ``str(i)``, written out below without the general encoder."""
    for v in values:
        cls = type(v)
        if cls is str:
            if not v.isascii():
                return False
        elif cls is not int or not -MAX_SAFE_INT <= v <= MAX_SAFE_INT:
            return False
    return True


def event_signing_bytes(feed: str, kind: str, author: str, ts: int, ctx: int, body: Any) -> bytes:
    try:
        if _plain(feed, kind, author, ts, ctx):  # the members in canonical (sorted) order
            return EVENT_DOMAIN + (f'{{"author":{_encode_str(author)},"body":').encode() + canonical(body, 1) + (
                f',"ctx":{ctx},"feed":{_encode_str(feed)},"kind":{_encode_str(kind)},"ts":{ts}}}').encode()
        payload = {"author": author, "body": body, "ctx": ctx, "feed": feed, "kind": kind, "ts": ts}
        return EVENT_DOMAIN + canonical(payload)
    except CanonicalError as exc:
        raise InvalidEvent(f"body is not canonical JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Event:
    """An author-signed event. Construct with :meth:`create` or :meth:`from_wire`."""

    feed: str
    kind: str
    author: str
    ts: int
    ctx: int
    body: Any
    sig: str
    id: str
    size: int = field(default=0, compare=False)

    @classmethod
    def create(
        cls, key: Keypair, feed: str, kind: str, body: Any, ctx: int = 0, ts: int | None = None
    ) -> Event:
        check_feed(feed)
        if not KIND_RE.match(kind):
            raise InvalidEvent("kind must match [a-z][a-z0-9_.-]{0,63}")
        ts = now_ms() if ts is None else ts
        if not _is_int(ts) or not 0 <= ts <= MAX_TS:
            raise InvalidEvent("ts must be a non-negative integer (ms)")
        if not _is_int(ctx) or not 0 <= ctx <= MAX_TS:
            raise InvalidEvent("ctx must be a non-negative integer")
        signing = event_signing_bytes(feed, kind, key.public_hex, ts, ctx, body)
        return cls(
            feed, kind, key.public_hex, ts, ctx, body,
            key.sign(signing).hex(), hashlib.sha256(signing).hexdigest(), len(signing),
        )

    @classmethod
    def from_wire(cls, d: Any, verify_sig: bool = True) -> Event:
        """Validate an untrusted wire object; raise InvalidEvent or BadSignature."""
        event, signing = cls.unverified(d)
        if verify_sig and not verify(bytes.fromhex(event.author), signing, bytes.fromhex(event.sig)):
            raise BadSignature(BAD_SIGNATURE)
        return event

    @classmethod
    def unverified(cls, d: Any) -> tuple[Event, bytes]:
        """Validate an untrusted wire object but its signature (its id included); return the
        event and its signing bytes, for a signature check elsewhere (``relay.core.verifier``).
        Raise InvalidEvent or BadSignature (a wrong id)."""
        if not isinstance(d, dict):
            raise InvalidEvent("event must be an object")
        if set(d) != EVENT_FIELDS:
            missing = EVENT_FIELDS - set(d)
            extra = set(d) - EVENT_FIELDS
            raise InvalidEvent(f"event fields wrong (missing {sorted(missing)}, unknown {sorted(extra)})")
        feed, kind, author, ts, ctx = d["feed"], d["kind"], d["author"], d["ts"], d["ctx"]
        check_feed(feed)
        if not isinstance(kind, str) or not KIND_RE.match(kind):
            raise InvalidEvent("kind must match [a-z][a-z0-9_.-]{0,63}")
        if not isinstance(author, str) or not HEX64_RE.match(author):
            raise InvalidEvent("author must be 64 lowercase hex chars")
        if not _is_int(ts) or not 0 <= ts <= MAX_TS:
            raise InvalidEvent("ts must be a non-negative integer (ms)")
        if not _is_int(ctx) or not 0 <= ctx <= MAX_TS:
            raise InvalidEvent("ctx must be a non-negative integer")
        sig, eid = d["sig"], d["id"]
        if not isinstance(sig, str) or not HEX128_RE.match(sig):
            raise InvalidEvent("sig must be 128 lowercase hex chars")
        if not isinstance(eid, str) or not HEX64_RE.match(eid):
            raise InvalidEvent("id must be 64 lowercase hex chars")
        signing = event_signing_bytes(feed, kind, author, ts, ctx, d["body"])
        if hashlib.sha256(signing).hexdigest() != eid:
            raise BadSignature("id is not the SHA-256 of the signed bytes")
        return cls(feed, kind, author, ts, ctx, d["body"], sig, eid, len(signing)), signing

    def to_wire(self) -> dict[str, Any]:
        return {
            "feed": self.feed, "kind": self.kind, "author": self.author, "ts": self.ts,
            "ctx": self.ctx, "body": self.body, "sig": self.sig, "id": self.id,
        }

    def signing_bytes(self) -> bytes:
        return event_signing_bytes(self.feed, self.kind, self.author, self.ts, self.ctx, self.body)

    def verify(self) -> bool:
        signing = self.signing_bytes()
        return hashlib.sha256(signing).hexdigest() == self.id and verify(
            bytes.fromhex(self.author), signing, bytes.fromhex(self.sig)
        )

    @property
    def namespace(self) -> str:
        return namespace_of(self.feed)


def receipt_bytes(feed: str, seq: int, prev: str, event_id: str, rtime: int, relay: str) -> bytes:
    if _plain(feed, seq, prev, event_id, rtime, relay):  # the members in canonical (sorted) order
        return RECORD_DOMAIN + (f'{{"event":{_encode_str(event_id)},"feed":{_encode_str(feed)},'
                                f'"prev":{_encode_str(prev)},"relay":{_encode_str(relay)},"rtime":{rtime},'
                                f'"seq":{seq}}}').encode()
    return RECORD_DOMAIN + canonical(
        {"event": event_id, "feed": feed, "prev": prev, "relay": relay, "rtime": rtime, "seq": seq}
    )


@dataclass(frozen=True, slots=True)
class Record:
    """An event with its place in a feed, signed by the relay that sequenced it."""

    seq: int
    prev: str
    rtime: int
    relay: str
    rsig: str
    event: Event
    hash: str

    @property
    def feed(self) -> str:
        return self.event.feed

    @classmethod
    def seal(cls, relay_key: Keypair, event: Event, seq: int, prev: str, rtime: int | None = None) -> Record:
        rtime = now_ms() if rtime is None else rtime
        rb = receipt_bytes(event.feed, seq, prev, event.id, rtime, relay_key.public_hex)
        return cls(seq, prev, rtime, relay_key.public_hex, relay_key.sign(rb).hex(), event,
                   hashlib.sha256(rb).hexdigest())

    @classmethod
    def unsigned(cls, relay: str, event: Event, seq: int, prev: str, rtime: int) -> tuple[Record, bytes]:
        """The record :meth:`seal` makes but its signature (``rsig`` empty: :meth:`signed` adds
        it; the hash does not depend on it), and the receipt bytes to sign."""
        rb = receipt_bytes(event.feed, seq, prev, event.id, rtime, relay)
        return cls(seq, prev, rtime, relay, "", event, hashlib.sha256(rb).hexdigest()), rb

    def signed(self, rsig: bytes) -> Record:
        """This record with the relay's signature ``rsig`` of its receipt bytes."""
        return Record(self.seq, self.prev, self.rtime, self.relay, rsig.hex(), self.event, self.hash)

    @classmethod
    def from_wire(cls, d: Any, verify_sigs: bool = True) -> Record:
        """Validate an untrusted record: event signature and id, and the relay's receipt."""
        if not isinstance(d, dict) or set(d) != RECORD_FIELDS:
            raise InvalidEvent("record must have exactly the fields " + ", ".join(sorted(RECORD_FIELDS)))
        event = Event.from_wire(d["event"], verify_sig=verify_sigs)
        seq, prev, rtime, relay, rsig = d["seq"], d["prev"], d["rtime"], d["relay"], d["rsig"]
        if not _is_int(seq) or not 1 <= seq <= MAX_TS:
            raise InvalidEvent("seq must be a positive integer")
        if not _is_int(rtime) or not 0 <= rtime <= MAX_TS:
            raise InvalidEvent("rtime must be a non-negative integer")
        for name, v, rx in (("prev", prev, HEX64_RE), ("relay", relay, HEX64_RE), ("rsig", rsig, HEX128_RE)):
            if not isinstance(v, str) or not rx.match(v):
                raise InvalidEvent(f"{name} is not lowercase hex of the right length")
        rb = receipt_bytes(event.feed, seq, prev, event.id, rtime, relay)
        if verify_sigs and not verify(bytes.fromhex(relay), rb, bytes.fromhex(rsig)):
            raise BadSignature("relay receipt signature does not verify")
        return cls(seq, prev, rtime, relay, rsig, event, hashlib.sha256(rb).hexdigest())

    @classmethod
    def from_stored(cls, d: Any) -> Record:
        """A record as a relay's own storage holds it (a process of the site checked it before
        storing it; a relay's processes trust each other as they trust their storage): nothing
        is validated and the event id is taken as stored, so the event's canonical bytes are
        not hashed; only its size and the record's hash (from the short receipt bytes) are
        computed. :meth:`from_wire` is for anything else. KeyError or TypeError if ``d`` is not
        a record's wire object."""
        e = d["event"]
        feed, kind, author, ts, ctx, body = e["feed"], e["kind"], e["author"], e["ts"], e["ctx"], e["body"]
        eid = e["id"]
        seq, prev, rtime, relay = d["seq"], d["prev"], d["rtime"], d["relay"]
        size = len(event_signing_bytes(feed, kind, author, ts, ctx, body))
        rb = receipt_bytes(feed, seq, prev, eid, rtime, relay)
        return cls(seq, prev, rtime, relay, d["rsig"], Event(feed, kind, author, ts, ctx, body, e["sig"], eid, size),
                   hashlib.sha256(rb).hexdigest())

    def to_wire(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "prev": self.prev, "rtime": self.rtime, "relay": self.relay,
            "rsig": self.rsig, "event": self.event.to_wire(),
        }


def snapshot_bytes(feed: str, seq: int, head: str, state: bytes, relay: str) -> bytes:
    return SNAPSHOT_DOMAIN + canonical(
        {"feed": feed, "head": head, "relay": relay, "seq": seq,
         "state_hash": hashlib.sha256(state).hexdigest()}
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A relay-signed summary of a feed's derived state at ``seq`` (docs: a Yjs update)."""

    feed: str
    seq: int
    head: str
    state: bytes
    relay: str
    rsig: str

    @classmethod
    def seal(cls, relay_key: Keypair, feed: str, seq: int, head: str, state: bytes) -> Snapshot:
        sb = snapshot_bytes(feed, seq, head, state, relay_key.public_hex)
        return cls(feed, seq, head, state, relay_key.public_hex, relay_key.sign(sb).hex())

    def verify(self) -> bool:
        sb = snapshot_bytes(self.feed, self.seq, self.head, self.state, self.relay)
        return verify(bytes.fromhex(self.relay), sb, bytes.fromhex(self.rsig))

    def to_wire(self) -> dict[str, Any]:
        return {"feed": self.feed, "seq": self.seq, "head": self.head,
                "state": base64.b64encode(self.state).decode(), "relay": self.relay, "rsig": self.rsig}

    @classmethod
    def from_wire(cls, d: Any) -> Snapshot:
        if not isinstance(d, dict) or set(d) != SNAPSHOT_FIELDS:
            raise InvalidEvent("snapshot must have exactly the fields " + ", ".join(sorted(SNAPSHOT_FIELDS)))
        feed, seq, head, relay, rsig = check_feed(d["feed"]), d["seq"], d["head"], d["relay"], d["rsig"]
        if not _is_int(seq) or not 1 <= seq <= MAX_TS:
            raise InvalidEvent("bad snapshot: seq must be a positive integer")
        for name, v, rx in (("head", head, HEX64_RE), ("relay", relay, HEX64_RE), ("rsig", rsig, HEX128_RE)):
            if not isinstance(v, str) or not rx.match(v):
                raise InvalidEvent(f"bad snapshot: {name} is not lowercase hex of the right length")
        snap = cls(feed, seq, head, unb64(d["state"]), relay, rsig)
        if not snap.verify():
            raise BadSignature("snapshot signature does not verify")
        return snap


def hello_bytes(key: str, nonce: str, relay: str) -> bytes:
    return HELLO_DOMAIN + canonical({"key": key, "nonce": nonce, "relay": relay})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes:
    """Decode standard base64 with padding; only the canonical form (zero pad bits) is accepted."""
    if not isinstance(text, str):
        raise InvalidEvent("expected a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise InvalidEvent("not valid base64") from exc
    if b64(data) != text:  # e.g. "QR==": non-zero pad bits that lenient decoders ignore
        raise InvalidEvent("not canonical base64 (padding bits must be zero)")
    return data
