"""One relay's membership in a federation: routing, links to peers, mirrors, forwarding.

Built by :class:`relay.server.Relay` when peers are configured; it registers on the hub's
publish routes (``hub.routes.register_federation``: routing, forward, mirror) so every publish
path (native sessions, the Yjs endpoint, the coordinator) forwards events of feeds another
member homes (docs/federation.md).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from collab.errors import HomeUnreachable
from collab.events import Event, namespace_of

from relay.core.limits import RateLimiter
from relay.core.routing import Member, Routing, parse_pin

if TYPE_CHECKING:
    from relay.core.config import Config
    from relay.core.hub import Hub

log = logging.getLogger(__name__)

#: namespaces whose events wait for the home while it is unreachable (CRDT updates merge)
WAITING_NAMESPACES = frozenset(("doc",))
WAIT_FOR_HOME = 3600.0  # seconds a waiting publish may be held
CUT_OFF = 60.0  # seconds a peer that sent false evidence is refused at the handshake


class Federation:
    """``start`` after the hub is up, ``close`` before it goes."""

    def __init__(self, hub: Hub, config: Config) -> None:
        self.hub, self.config = hub, config
        url = config.public_url or f"http://{config.host}:{config.port}"
        if not config.public_url and config.port == 0:
            raise RuntimeError("a federated relay needs --public-url when it listens on port 0")
        self.routing = Routing(Member(hub.relay_key.public_hex, url.rstrip("/")),
                               tuple(Member.parse(p) for p in config.peers), tuple(config.replicate),
                               tuple(parse_pin(p) for p in config.pins))
        self.links: dict[str, Any] = {}
        self.mirrors: Any = None
        self.alarms: Any = None
        lim = config.limits
        self.peer_frames = RateLimiter(lim.peer_frames_per_sec, lim.peer_frames_burst, 1024)  # per peer key
        # (peer key, process) -> its /fed session (a newer one from the same process replaces it)
        self.inbound: dict[tuple[str, str], Any] = {}
        self.cut_off_until: dict[str, float] = {}  # peer key -> monotonic time its handshakes are refused until

    def cut_off(self, peer_key: str) -> None:
        """The peer sent false evidence: refuse its links for ``CUT_OFF`` seconds."""
        self.cut_off_until[peer_key] = time.monotonic() + CUT_OFF

    def is_cut_off(self, peer_key: str) -> bool:
        until = self.cut_off_until.get(peer_key)
        if until is not None and until <= time.monotonic():
            del self.cut_off_until[peer_key]
            until = None
        return until is not None

    async def start(self) -> None:
        from relay.federation.alarms import Alarms
        from relay.federation.link import Link
        from relay.federation.mirror import Mirrors

        self.hub.routes.register_federation(self.routing, self.forward, self.ensure_mirror, self.on_heads)
        self.alarms = Alarms(self.hub)
        for peer in self.routing.peers:
            self.links[peer.key] = Link(self.hub.relay_key, peer)
        self.mirrors = Mirrors(self.hub, self.routing, self.links, self.alarms, self.config.sync_interval)
        for link in self.links.values():
            await link.start()
        await self.mirrors.start()

    async def close(self) -> None:
        if self.mirrors is not None:
            await self.mirrors.close()
        await asyncio.gather(*(link.close() for link in self.links.values()), return_exceptions=True)
        self.hub.routes.unregister_forward()

    async def on_heads(self, peer_key: str, heads: Any) -> None:
        """A peer's heads arrived on its ``/fed`` link: the mirrors compare them with ours."""
        if self.mirrors is not None:
            await self.mirrors.on_heads(peer_key, heads)

    async def forward(self, event: Event, session_key: str | None) -> tuple[int, bool]:
        """Publish at the feed's home; doc events wait for an unreachable home, others fail."""
        home = self.routing.home(event.feed)
        link = self.links[home.key]
        if not link.connected:
            if namespace_of(event.feed) not in WAITING_NAMESPACES:
                raise HomeUnreachable(f"the home relay of {event.feed} ({home.url}) is unreachable; retry later")
            await link.wait_connected(WAIT_FOR_HOME)
        while True:
            try:
                return await link.forward(event, session_key)
            except HomeUnreachable:
                if namespace_of(event.feed) not in WAITING_NAMESPACES:
                    raise
                await link.wait_connected(WAIT_FOR_HOME)  # the link dropped mid-way: resend (ids dedupe)

    async def ensure_mirror(self, feed: str) -> None:
        """Start mirroring ``feed`` from its home (a local agent wants it)."""
        if self.mirrors is not None and not self.routing.is_home(feed):
            await self.mirrors.ensure(feed)

    def health(self) -> dict[str, Any]:
        return {
            "members": [{"key": m.key, "url": m.url} for m in self.routing.members],
            "links": {k: {"url": link.peer.url, "connected": link.connected, "last_error": link.last_error}
                      for k, link in self.links.items()},
            "alarms": self.alarms.count if self.alarms is not None else 0,
            "alarms_suppressed": self.alarms.suppressed if self.alarms is not None else 0,
            "false_evidence": self.mirrors.false_evidence if self.mirrors is not None else 0,
            "cut_off": sorted(k for k in list(self.cut_off_until) if self.is_cut_off(k)),
        }
