"""One exception hierarchy for Colony (SDK and relay alike).

ColonyError
├── ProtocolError            a peer sent something that breaks the protocol
│   ├── MalformedFrame       not JSON, wrong shape, unknown frame type      -> ``malformed``
│   ├── TooLarge             frame or event over a configured limit         -> ``too_large``
│   ├── InvalidEvent         fails encoding/shape/namespace rules            -> ``invalid``
│   │   ├── CanonicalError   a value outside the canonical JSON domain (also a ValueError)
│   │   ├── Late             past the deadline the namespace judges by rtime -> ``late``
│   │   ├── Conflict         clashes with the feed's state (a second bid)    -> ``conflict``
│   │   │   └── StaleEpoch   a fence names a lease epoch its author no longer holds -> ``stale_epoch``
│   │   └── InsufficientFunds  the ledger balance does not cover a stake    -> ``insufficient_funds``
│   ├── BadSignature         signature, id or receipt does not verify        -> ``bad_signature``
│   ├── AuthRequired         publish before an authenticated hello           -> ``auth_required``
│   ├── Unauthorized         key lacks the right for this feed               -> ``unauthorized``
│   ├── RateLimited          too many events per second (key or IP)          -> ``rate_limited``
│   ├── LimitExceeded        e.g. too many subscriptions on one connection   -> ``limit_exceeded``
│   ├── FalseEvidence        relay.federation.mirror: a peer's head of a feed this relay homes is
│   │                        not in its log (the peer is cut off)            -> ``false_evidence``
│   └── YProtocolError       relay.endpoints.yjs_protocol: a malformed y-protocol message
│                            (also a ValueError; the Yjs connection closes with 4400)
├── ChainError               a record breaks its feed's hash chain (client/replay side)
│   └── _Relinked            relay.endpoints.http_state: a checkpoint does not link (fold restarts)
├── Unavailable              storage cannot durably append right now         -> ``unavailable``
│   ├── HomeUnreachable      the feed's home relay (federation) is out of reach -> ``home_unreachable``
│   ├── Busy                 the relay holds ``max_loaded_feeds`` feeds, none idle -> ``busy``
│   └── Deposed              relay.storage.base: this process no longer sequences the feed (its
│                            Redis sequencing lease lapsed or moved; the publish is handed on)
├── RelayError               the relay answered a request with an error frame (client side)
├── Unreachable              no relay answers at a URL: refused, DNS, TLS or timeout (client side)
├── EnginePanic              collab.namespaces.doc: the Yjs engine panicked encoding a document this
│                            process holds (the relay reloads the feed and quarantines the culprit)
├── HeadMoved                relay.storage.base: the feed head moved under an append (CAS lost)
├── MirrorConflict           relay.core.mirrorstore: a mirrored record does not extend our head
├── Refused                  relay.federation.link: a federation handshake was refused
├── TooCostly                relay.endpoints.http_state: a state view would replay too much
├── ConfigError              relay.ops.cli: an unknown or invalid setting (also a ValueError)
├── BackupError              relay.ops.backup: an export file or target store is not acceptable
└── CompactError             relay.ops.compact: a feed cannot be compacted

The classes named with a module live there (they belong to that part of the relay) and
subclass the class drawn above them; the rest are defined here. No other exception class
exists in ``collab`` or ``relay`` (tests/collab/test_errors.py walks the packages to check).

Every peer-caused error has a stable machine-readable ``code``; the relay turns it into an
``error`` frame. Anything else is a bug: it is logged with a traceback and the peer only
sees ``internal``.
"""
from __future__ import annotations


class ColonyError(Exception):
    """Base of every error Colony raises on purpose.

    ``feed`` is the feed the error concerns when the code that saw it knows (the client's
    protocol core names the feed of a record that fails verification); None otherwise.
    """

    code = "internal"
    feed: str | None = None

    def concerns(self, feed: str) -> None:
        """Name the feed this error is about (for the handler that catches it)."""
        self.feed = feed


class ProtocolError(ColonyError):
    code = "malformed"


class MalformedFrame(ProtocolError):
    code = "malformed"


class TooLarge(ProtocolError):
    code = "too_large"


class InvalidEvent(ProtocolError):
    code = "invalid"


class CanonicalError(InvalidEvent, ValueError):
    """The value is outside the canonical JSON domain (collab.canonical)."""


class Late(InvalidEvent):
    """The event arrived after a deadline (judged on the relay's receipt time, never ``ts``)."""

    code = "late"


class Conflict(InvalidEvent):
    """The event contradicts the feed's state: a second live bid, a result from a non-assignee."""

    code = "conflict"


class StaleEpoch(Conflict):
    """A fenced event (``body.fence``) whose author does not hold that lease at that epoch now
    (deposed, expired, resigned, or an epoch a later one superseded): docs/coordination.md, "Leases"."""

    code = "stale_epoch"


class InsufficientFunds(InvalidEvent):
    """A stake, lock or escrow the ledger balance does not cover (balances never go negative)."""

    code = "insufficient_funds"


class BadSignature(ProtocolError):
    code = "bad_signature"


class AuthRequired(ProtocolError):
    code = "auth_required"


class Unauthorized(ProtocolError):
    code = "unauthorized"


class RateLimited(ProtocolError):
    code = "rate_limited"


class LimitExceeded(ProtocolError):
    code = "limit_exceeded"


class ChainError(ColonyError):
    code = "bad_chain"


class Unavailable(ColonyError):
    code = "unavailable"


class HomeUnreachable(Unavailable):
    """A federated relay cannot reach the relay that homes the feed (docs/federation.md)."""

    code = "home_unreachable"


class Busy(Unavailable):
    """Loading one more feed would pass ``max_loaded_feeds`` and no loaded feed is idle enough
    to unload (every one has subscribers or queued work); retry later (HTTP 503 + Retry-After)."""

    code = "busy"


class RelayError(ColonyError):
    """An ``error`` frame received from the relay, raised to the caller that caused it."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class Unreachable(ColonyError):
    """No relay answers at ``url`` (connection refused, name not resolved, handshake or timeout).
    Client side only: a peer never sends this code; ``colony`` exits 3 on it."""

    code = "unreachable"

    def __init__(self, url: str, reason: str = "") -> None:
        super().__init__(f"cannot reach {url}" + (f": {reason}" if reason else ""))
        self.url = url
        self.reason = reason


ERROR_CODES = (
    "malformed",
    "too_large",
    "invalid",
    "late",
    "conflict",
    "insufficient_funds",
    "bad_signature",
    "auth_required",
    "unauthorized",
    "rate_limited",
    "limit_exceeded",
    "unavailable",
    "home_unreachable",
    "false_evidence",
    "internal",
)
