"""Who is home for a feed: membership, rendezvous hashing and pins (docs/federation.md).

Pure: every member computes the same answer from the same configuration, with no I/O.
"""
from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field

from collab.events import HEX64_RE

ROUTE_DOMAIN = b"colony/route/v1\n"
#: namespaces whose relay-signed steps span feeds (a bid locks stake in the ledger, an outcome
#: lands in the trust feed): one relay must home them all, so they are routed as one feed
AUTHORITY_PREFIXES = ("ledger/", "auction/", "vouch/")
AUTHORITY_ANCHOR = "ledger/main"
HOME_CACHE = 100_000
LOCAL_PREFIX = "relay/"  # feeds every relay homes itself (docs/federation.md, Equivocation)


@dataclass(frozen=True, slots=True)
class Member:
    key: str  # relay key, 64 hex
    url: str  # base URL (http://host:port)

    @classmethod
    def parse(cls, spec: str) -> Member:
        """``URL#KEY`` as given to ``--peer``."""
        url, sep, key = spec.rpartition("#")
        if not sep or not url or not HEX64_RE.match(key):
            raise ValueError(f"a peer is URL#RELAYKEY (64 hex chars), not {spec!r}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a peer URL starts with http:// or https://, not {url!r}")
        return cls(key, url.rstrip("/"))


def _score(key: str, feed: str) -> bytes:
    return hashlib.sha256(ROUTE_DOMAIN + bytes.fromhex(key) + feed.encode()).digest()


@dataclass(frozen=True, slots=True)
class Routing:
    """This relay (``me``) and its peers; ``replicate`` prefixes; ``pins`` (pattern, key)."""

    me: Member
    peers: tuple[Member, ...] = ()
    replicate: tuple[str, ...] = ("vouch/",)
    pins: tuple[tuple[str, str], ...] = ()
    _by_key: dict[str, Member] = field(default_factory=dict, compare=False, repr=False)
    _homes: dict[str, Member] = field(default_factory=dict, compare=False, repr=False)  # per-publish lookups

    def __post_init__(self) -> None:
        by_key = {m.key: m for m in (self.me, *self.peers)}
        if len(by_key) != 1 + len(self.peers):
            raise ValueError("federation members must have distinct keys (a peer has this relay's key?)")
        for pattern, key in self.pins:
            if key not in by_key:
                raise ValueError(f"pin {pattern!r}: {key[:16]}… is not a member of the federation")
        object.__setattr__(self, "_by_key", by_key)

    @property
    def federated(self) -> bool:
        return bool(self.peers)

    @property
    def members(self) -> list[Member]:
        return [self.me, *self.peers]

    def member(self, key: str) -> Member | None:
        return self._by_key.get(key)

    def home(self, feed: str) -> Member:
        """The member that orders ``feed`` (cached: every publish of a federated relay asks)."""
        hit = self._homes.get(feed)
        if hit is None:
            if len(self._homes) >= HOME_CACHE:
                self._homes.clear()
            hit = self._homes[feed] = self._home(feed)
        return hit

    def _home(self, feed: str) -> Member:
        if feed.startswith(LOCAL_PREFIX):  # relay/alarms etc.: each relay's own, never forwarded or mirrored
            return self.me
        for pattern, key in self.pins:
            if fnmatch.fnmatchcase(feed, pattern):
                return self._by_key[key]
        if not self.peers:
            return self.me
        if feed.startswith(AUTHORITY_PREFIXES):
            feed = AUTHORITY_ANCHOR
        return max(self.members, key=lambda m: _score(m.key, feed))

    def is_home(self, feed: str) -> bool:
        return self.home(feed).key == self.me.key

    def replicated(self, feed: str) -> bool:
        return any(feed.startswith(p) for p in self.replicate)


def parse_pin(spec: str) -> tuple[str, str]:
    """``PATTERN=KEY`` as given to ``--pin``."""
    pattern, sep, key = spec.rpartition("=")
    if not sep or not pattern or not HEX64_RE.match(key):
        raise ValueError(f"a pin is PATTERN=RELAYKEY (64 hex chars), not {spec!r}")
    return pattern, key
