"""The metric accumulators and the per-relay registry, without a relay."""
from __future__ import annotations

import pytest

from relay.core.metrics import Counter, Gauge, Histogram, Metrics
from tests.relay.promtext import parse, value


def test_registries_are_per_relay() -> None:
    """Two relays in one process keep their own registries; the library's global one stays empty of ours."""
    from prometheus_client import REGISTRY

    a, b = Metrics(), Metrics()
    a.events_in.inc("doc", n=5)
    a.publish_latency.observe(0.2)
    _, sa = parse(a.render()[0].decode())
    _, sb = parse(b.render()[0].decode())
    assert value(sa, "colony_events_in_total", namespace="doc") == 5
    assert value(sa, "colony_publish_ack_seconds_count") == 1
    assert value(sb, "colony_events_in_total", namespace="doc") == 0
    assert value(sb, "colony_publish_ack_seconds_count") == 0
    assert REGISTRY.get_sample_value("colony_connections") is None


def test_registry_render() -> None:
    c = Counter("x_total", "a counter", ("code",))
    c.inc('we"ird\\')
    c.inc('we"ird\\', n=2)
    g = Gauge("g", "a gauge")
    g.set(1.5)
    h = Histogram("h_seconds", "latency", (0.1, 1.0))
    h.observe(0.1)
    h.observe(0.5)
    h.observe(3)
    types, samples = parse("\n".join(m.render() for m in (c, g, h)) + "\n")
    assert types == {"x_total": "counter", "g": "gauge", "h_seconds": "histogram"}
    assert value(samples, "x_total", code='we\\"ird\\\\') == 3
    assert value(samples, "g") == 1.5
    assert value(samples, "h_seconds_bucket", le="0.1") == 1
    assert value(samples, "h_seconds_bucket", le="1.0") == 2
    assert value(samples, "h_seconds_bucket", le="+Inf") == 3
    assert value(samples, "h_seconds_count") == 3
    assert value(samples, "h_seconds_sum") == pytest.approx(3.6)
