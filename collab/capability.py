"""Capability tokens: a feed owner's signed, expiring grant of rights to whoever holds it.

A capability is a canonical-JSON object signed by its *issuer* (the owner of the feed)::

    {"exp": 1700003600000, "feed": "doc/notes", "grantee": null, "iat": 1700000000000,
     "issuer": "<64 hex>", "nonce": "<32 hex>", "rights": ["read", "write"], "sig": "<128 hex>"}

    signing_bytes = "colony/capability/v1\\n" || canonical(the object without "sig")
    token         = base64url without padding of canonical(the whole object, with "sig")

``grantee`` is ``null``: the token is a *bearer* token (whoever presents it holds the rights);
other values are reserved. ``rights`` is ``["read"]`` or ``["read", "write"]``. Times are ms
since the epoch. A relay honours a capability for a feed only while its issuer is the feed's
owner (the author of seq 1), before ``exp``. ``docs/protocol.md`` (section 20) is normative.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

from .canonical import canonical, parse_json
from .errors import BadSignature, CanonicalError, InvalidEvent, Unauthorized
from .events import HEX64_RE, HEX128_RE, MAX_TS, check_feed, now_ms
from .keys import Keypair, verify

CAPABILITY_DOMAIN = b"colony/capability/v1\n"
CAP_FIELDS = frozenset(("feed", "grantee", "rights", "iat", "exp", "nonce", "issuer", "sig"))
RIGHT_SETS = (("read",), ("read", "write"))
NONCE_RE = re.compile(r"^[0-9a-f]{32}\Z")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")
MAX_TOKEN_CHARS = 4096
_VERIFIED_MAX = 1024
_VERIFIED: dict[str, tuple[dict[str, Any], Capability]] = {}  # sig -> (the wire object verified, capability)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _same(d: dict[str, Any], wire: dict[str, Any]) -> bool:
    """``d`` is ``wire`` (a verified capability's object): equal members of the same types."""
    return d == wire and all(type(d[k]) is type(v) for k, v in wire.items()) and \
        all(type(r) is str for r in d["rights"])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if len(text) % 4 == 1:
        raise InvalidEvent("token is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidEvent("token is not base64url") from exc
    if _b64url(data) != text:  # non-zero pad bits: only one spelling of a token is valid
        raise InvalidEvent("token is not canonical base64url")
    return data


@dataclass(frozen=True, slots=True)
class Capability:
    feed: str
    grantee: str | None
    rights: tuple[str, ...]
    iat: int
    exp: int
    nonce: str
    issuer: str
    sig: str

    # -- making ----------------------------------------------------------------------------
    @classmethod
    def issue(cls, key: Keypair, feed: str, *, write: bool = False, ttl_ms: int = 3_600_000,
              now: int | None = None) -> Capability:
        """A bearer capability for ``feed`` signed by ``key``, valid for ``ttl_ms`` from now."""
        check_feed(feed)
        iat = now_ms() if now is None else now
        if not _is_int(ttl_ms) or ttl_ms <= 0 or iat + ttl_ms > MAX_TS:
            raise InvalidEvent("ttl must be a positive number of milliseconds")
        rights = RIGHT_SETS[1] if write else RIGHT_SETS[0]
        nonce = os.urandom(16).hex()
        unsigned = {"feed": feed, "grantee": None, "rights": list(rights), "iat": iat, "exp": iat + ttl_ms,
                    "nonce": nonce, "issuer": key.public_hex}
        sig = key.sign(CAPABILITY_DOMAIN + canonical(unsigned)).hex()
        return cls(feed, None, rights, iat, iat + ttl_ms, nonce, key.public_hex, sig)

    def unsigned(self) -> dict[str, Any]:
        return {"feed": self.feed, "grantee": self.grantee, "rights": list(self.rights), "iat": self.iat,
                "exp": self.exp, "nonce": self.nonce, "issuer": self.issuer}

    def signing_bytes(self) -> bytes:
        return CAPABILITY_DOMAIN + canonical(self.unsigned())

    @property
    def id(self) -> str:
        """SHA-256 of the signing bytes: names this grant (e.g. in logs)."""
        return hashlib.sha256(self.signing_bytes()).hexdigest()

    def to_wire(self) -> dict[str, Any]:
        return {**self.unsigned(), "sig": self.sig}

    def token(self) -> str:
        return _b64url(canonical(self.to_wire()))

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def from_wire(cls, d: Any) -> Capability:
        """Validate an untrusted capability object (shape and issuer signature)."""
        if not isinstance(d, dict) or set(d) != CAP_FIELDS:
            raise InvalidEvent("capability must have exactly the fields " + ", ".join(sorted(CAP_FIELDS)))
        feed = check_feed(d["feed"])
        if d["grantee"] is not None:
            raise InvalidEvent("capability grantee must be null (bearer); other values are reserved")
        rights = d["rights"]
        if not isinstance(rights, list) or tuple(rights) not in RIGHT_SETS:
            raise InvalidEvent('capability rights must be ["read"] or ["read","write"]')
        iat, exp = d["iat"], d["exp"]
        if not (_is_int(iat) and _is_int(exp) and 0 <= iat <= exp <= MAX_TS):
            raise InvalidEvent("capability iat/exp must be integers (ms) with 0 <= iat <= exp")
        nonce, issuer, sig = d["nonce"], d["issuer"], d["sig"]
        if not isinstance(nonce, str) or not NONCE_RE.match(nonce):
            raise InvalidEvent("capability nonce must be 32 lowercase hex chars")
        if not isinstance(issuer, str) or not HEX64_RE.match(issuer):
            raise InvalidEvent("capability issuer must be 64 lowercase hex chars")
        if not isinstance(sig, str) or not HEX128_RE.match(sig):
            raise InvalidEvent("capability sig must be 128 lowercase hex chars")
        cap = cls(feed, None, tuple(rights), iat, exp, nonce, issuer, sig)
        if not verify(bytes.fromhex(issuer), cap.signing_bytes(), bytes.fromhex(sig)):
            raise BadSignature("capability signature does not verify for its issuer")
        return cap

    @classmethod
    def from_wire_cached(cls, d: Any) -> Capability:
        """``from_wire`` remembering recently verified capabilities (one is on every event a
        capability holder writes; the signature need not be checked again each time). A hit is
        the same object as one verified before, member for member and type for type (``True``
        is not ``1``), looked up by its signature: no canonical encoding per event."""
        sig = d.get("sig") if isinstance(d, dict) else None
        hit = _VERIFIED.get(sig) if isinstance(sig, str) else None
        if hit is not None and _same(d, hit[0]):
            return hit[1]
        cap = cls.from_wire(d)
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.pop(next(iter(_VERIFIED)))
        _VERIFIED[cap.sig] = (cap.to_wire(), cap)
        return cap

    @classmethod
    def from_token(cls, token: Any) -> Capability:
        """Decode and verify a token string (shape and signature; not expiry or ownership)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or not TOKEN_RE.match(token):
            raise InvalidEvent("token must be base64url text (at most 4096 characters)")
        raw = _unb64url(token)
        try:
            obj = parse_json(raw)
            if canonical(obj) != raw:
                raise InvalidEvent("token is not canonical JSON")
        except (CanonicalError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise InvalidEvent(f"token is not canonical JSON: {exc}") from exc
        return cls.from_wire(obj)

    # -- checking --------------------------------------------------------------------------
    def allows(self, right: str) -> bool:
        return right in self.rights

    def check(self, feed: str, owner: str | None, right: str, at: int) -> None:
        """Raise Unauthorized unless this capability grants ``right`` on ``feed`` at time ``at``
        (ms), given the feed's current ``owner`` (None: the feed has no records yet)."""
        if self.feed != feed:
            raise Unauthorized(f"the capability is for {self.feed}, not {feed}")
        if owner is None:
            raise Unauthorized(f"{feed} has no owner yet (no records): its owner must create it before "
                               "a capability for it is honoured")
        if self.issuer != owner:
            raise Unauthorized("the capability was not issued by the feed's owner")
        if not self.allows(right):
            raise Unauthorized(f"the capability does not grant {right}")
        if at >= self.exp:
            raise Unauthorized("the capability has expired")


__all__ = ["CAPABILITY_DOMAIN", "CAP_FIELDS", "RIGHT_SETS", "Capability"]
