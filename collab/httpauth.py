"""Signed HTTP reads: an HTTP request made *by a key* (docs/protocol.md section 15.1).

The HTTP API is anonymous unless a request carries

    Authorization: Colony key=<64 hex>,ts=<ms>,sig=<128 hex>

where ``sig`` is the key's Ed25519 signature of :func:`signing_bytes` (the relay's key, the
method, the path and ``ts``). The relay accepts it when the signature verifies and ``ts`` is
within :data:`MAX_SKEW_MS` of its own clock; the request is then read as that key, which may see
what only the readers of a private feed may see (owner, participants, records of a ``members``
or ``dm/`` feed it may read). It proves possession of the key, like the WebSocket hello; it
binds the relay, the method and the path, not the query or a body (HTTP reads have none).
"""
from __future__ import annotations

import re

from .canonical import canonical
from .errors import BadSignature, InvalidEvent, Unauthorized
from .keys import Keypair, verify

HTTP_DOMAIN = b"colony/http/v1\n"
MAX_SKEW_MS = 60_000  # |relay clock - ts| a signed request may have
SCHEME = "Colony"
_HEADER = re.compile(r"Colony key=([0-9a-f]{64}),ts=(0|[1-9][0-9]{0,15}),sig=([0-9a-f]{128})\Z")


def signing_bytes(key: str, relay: str, method: str, path: str, ts: int) -> bytes:
    return HTTP_DOMAIN + canonical({"key": key, "method": method, "path": path, "relay": relay, "ts": ts})


def authorization(key: Keypair, relay: str, method: str, path: str, ts: int) -> str:
    """The ``Authorization`` header value signing a request of ``key`` to ``relay``."""
    sig = key.sign(signing_bytes(key.public_hex, relay, method, path, ts)).hex()
    return f"{SCHEME} key={key.public_hex},ts={ts},sig={sig}"


def check(header: str, relay: str, method: str, path: str, now: int) -> str:
    """The key that signed ``header`` for this request at relay time ``now``; raise
    :class:`InvalidEvent` (malformed), :class:`BadSignature` or :class:`Unauthorized` (``ts``
    more than :data:`MAX_SKEW_MS` from ``now``)."""
    m = _HEADER.match(header)
    if m is None:
        raise InvalidEvent("Authorization must be 'Colony key=<64 hex>,ts=<ms>,sig=<128 hex>'")
    key, ts, sig = m.group(1), int(m.group(2)), m.group(3)
    if not verify(bytes.fromhex(key), signing_bytes(key, relay, method, path, ts), bytes.fromhex(sig)):
        raise BadSignature("the Authorization signature does not verify for this relay, method and path")
    if abs(now - ts) > MAX_SKEW_MS:
        raise Unauthorized(f"the Authorization ts is more than {MAX_SKEW_MS} ms from the relay's clock")
    return key


__all__ = ["HTTP_DOMAIN", "MAX_SKEW_MS", "authorization", "check", "signing_bytes"]
