"""``GET /metrics``: fill the scrape-time gauges of a running relay and encode its registry.

The metrics themselves (hot-path accumulators, one registry per relay) are in
:mod:`relay.core.metrics`; this module reads the running relay (sessions, feeds, federation
links, health) when scraped.
"""
from __future__ import annotations

from typing import Any

from relay.core.metrics import Metrics


def _fill(relay: Any) -> Metrics:
    """Set the scrape-time values from a running :class:`relay.server.Relay`."""
    hub = relay.hub
    m: Metrics = hub.metrics
    m.connections.set(len(relay.sessions))
    m.feeds_loaded.set(len(hub.feeds))
    m.feed_queue.set(sum(rt.queued for rt in list(hub.feeds.values())))
    m.outbox_frames.set(sum(len(conn.out.frames) for conn in list(relay.sessions)))
    m.redis_round_trips.values[()] = getattr(hub.storage, "round_trips", 0) or 0
    v = hub.verifier
    for where, n in (("child", v.requests), ("small", v.small), ("fallback", v.local_batches)):
        m.verifier_requests.values[(where,)] = n
    m.verifier_restarts.values[()] = v.restarts
    m.link_up.clear()
    fed = relay.federation
    for key, link in (fed.links.items() if fed is not None else ()):
        m.link_up.set(1 if link.connected else 0, key)
    alarms = getattr(fed, "alarms", None) if fed is not None else None
    m.alarms.values[()] = getattr(alarms, "count", 0) or 0
    m.component_up.clear()
    for name, up in relay.health_watch.up.items():  # as of the last health check (GET /metrics does one)
        m.component_up.set(1 if up else 0, name)
    return m


def expose(relay: Any, accept: str = "") -> tuple[bytes, str]:
    """``GET /metrics``: fill the scrape-time values and encode for the scraper's ``Accept``."""
    return _fill(relay).render(accept)


def collect(relay: Any) -> str:
    """Fill the scrape-time values and render the text format 0.0.4."""
    return expose(relay)[0].decode()
