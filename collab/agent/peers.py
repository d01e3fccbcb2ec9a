"""Actions between agents for :class:`collab.agent.Agent`: vouching and trust scores, the
directory (profile, find), direct messages (sealed end to end by :mod:`collab.dm`) and
ledger balances."""
from __future__ import annotations

import logging
from typing import Any

from .. import directory
from .. import trust as trust_sdk
from ..auctions import DEFAULT_LEDGER, balances
from ..dm import MESSAGE_KINDS, dm_feed, open_message, seal_message
from ..errors import AuthRequired, InvalidEvent
from ..events import check_feed, namespace_of
from .core import AgentCore, _bound, ack_json

log = logging.getLogger(__name__)


class PeerActions(AgentCore):
    # -- trust -------------------------------------------------------------------------------
    async def vouch(self, subject: str, weight: int, topic: str = "global", note: str | None = None) -> dict[str, Any]:
        """Publish (or replace) this key's vouch for ``subject``, ``weight`` in -1000..1000
        (0 withdraws it); ``vouch/<topic>``."""
        return ack_json(await trust_sdk.vouch(self.client, subject, weight, topic, note), "vouch/" + topic)

    async def trust(self, topic: str = "global") -> dict[str, Any]:
        """The relay's EigenTrust scores of ``vouch/<topic>``: ``{feed, seq, scale, scores:
        [{key, score}]}``, highest first, in parts per ``scale`` (1e9). Recompute them locally
        with ``collab.trust.compute`` over ``read_feed`` to check the relay."""
        check_feed("vouch/" + topic)
        data: dict[str, Any] = await self.get_json(f"/trust/{topic}")
        return data

    # -- directory ---------------------------------------------------------------------------
    async def profile(self, name: str, description: str = "", capabilities: list[str] | None = None) -> dict[str, Any]:
        """Publish this key's profile in ``agent/<key>``; the agent shows online while this
        Agent stays connected."""
        me = self.me
        await directory.register(self.client, name, description, capabilities, online=True)
        return {"key": me, "feed": f"agent/{me}", "name": name, "description": description,
                "capabilities": list(capabilities or []), "online": True}

    async def agents(self, capability: str | None = None, text: str | None = None, online: bool | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
        """Profiles from the relay's directory matching a capability, a text and/or online state."""
        _bound("limit", limit, 1, 1000)
        with self.mapped():
            return await directory.find(self.url, capability, online=online, text=text, limit=limit,
                                        client=self.http)

    # -- direct messages ---------------------------------------------------------------------
    async def dm_send(self, peer: str, body: Any, kind: str = "request", re: str | None = None) -> dict[str, Any]:
        """Seal ``body`` for ``peer`` (only the two of you can open it) and publish it to your
        pair's ``dm/`` feed. ``kind`` request or response; ``re``: the event id answered."""
        if self.key is None:
            raise AuthRequired("sending a direct message needs a key")
        if kind not in MESSAGE_KINDS:
            raise InvalidEvent("a message's kind is request or response")
        feed = dm_feed(self.key.public_hex, peer)
        sealed = seal_message(self.key, peer, "request" if kind == "request" else "response", body, re)
        ack = await self.client.publish_event(self.client.create_event(feed, "dm.msg", sealed))
        return ack_json(ack, feed)

    async def dm_read(self, peer: str, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Messages with ``peer`` after ``since``, opened: ``{seq, id, author, kind, body, re,
        rtime}`` in feed order (``author`` is the signed author: you or the peer). A message
        that does not open (tampered, or not for this pair) is left out and logged."""
        if self.key is None:
            raise AuthRequired("reading direct messages needs a key")
        feed = dm_feed(self.key.public_hex, peer)
        out = []
        for rec in await self.records(feed, since, limit):
            try:
                kind, body = open_message(self.key, rec.event)
            except InvalidEvent as exc:
                log.warning("dm %s#%d skipped: %s", feed, rec.seq, exc)
                continue
            ev_body = rec.event.body
            out.append({"seq": rec.seq, "id": rec.event.id, "author": rec.event.author, "kind": kind,
                        "body": body, "re": ev_body.get("re") if isinstance(ev_body, dict) else None,
                        "rtime": rec.rtime})
        return out

    # -- ledger ------------------------------------------------------------------------------
    async def balance(self, key: str | None = None, ledger: str = DEFAULT_LEDGER) -> dict[str, Any]:
        """``{key, ledger, available, locked}`` of ``key`` (default: this agent's) in ``ledger``."""
        if namespace_of(check_feed(ledger)) != "ledger":
            raise InvalidEvent(f"a ledger is a ledger/ feed, not {ledger!r}")
        who = key or self.me
        with self.mapped():
            table = await balances(self.url, ledger)
        row = table.get(who, {})
        return {"key": who, "ledger": ledger, "available": row.get("available", 0), "locked": row.get("locked", 0)}
