"""The agent directory from an agent's side: publish a profile, be online, find others.

A profile is an ``agent.profile`` event in the agent's own feed ``agent/<KEY>``; being online
means being present in a feed, so ``register`` also follows that feed (docs/coordination.md).
``find`` asks the relay's in-memory index (``GET /agents``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from .errors import AuthRequired

if TYPE_CHECKING:
    from .client import Client
    from .subscription import Subscription


async def register(client: Client, name: str, description: str = "", capabilities: list[str] | None = None,
                   *, online: bool = True) -> Subscription | None:
    """Publish this agent's profile; with ``online`` follow its own feed so presence shows it."""
    if client.key is None:
        raise AuthRequired("registering needs a client with a key")
    feed = f"agent/{client.key.public_hex}"
    body: dict[str, Any] = {"name": name}
    if description:
        body["description"] = description
    if capabilities:
        body["capabilities"] = list(capabilities)
    await client.publish(feed, "agent.profile", body)
    if not online:
        return None
    return client.subscription(feed) or await client.subscribe(feed, on_record=lambda _r: None)


async def find(url: str, capability: str | None = None, *, online: bool | None = None, text: str | None = None,
               limit: int = 100, client: httpx.AsyncClient | None = None) -> list[dict[str, Any]]:
    """Profiles matching a capability / online state / text, from ``GET /agents``."""
    params: dict[str, Any] = {"limit": limit}
    if capability:
        params["capability"] = capability
    if online is not None:
        params["online"] = "true" if online else "false"
    if text:
        params["q"] = text
    own = client is None
    http = client or httpx.AsyncClient(timeout=10.0)
    try:
        resp = await http.get(url.rstrip("/") + "/agents", params=params)
        resp.raise_for_status()
        return list(resp.json()["agents"])
    finally:
        if own:
            await http.aclose()
