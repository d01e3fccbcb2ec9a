"""Prometheus metrics (text exposition format 0.0.4), written by hand.

A tiny registry: :class:`Counter`, :class:`Gauge` and :class:`Histogram`, each with an
optional tuple of label names and its samples in a plain dict keyed by the label values
(the hot path is one dict ``get`` and one store). Counters that the feed workers and sessions
bump live in :class:`Metrics` (one per hub, so several relays in one process stay apart);
gauges that describe the relay's current state are filled in at scrape time by
:func:`collect`. ``GET /metrics`` (relay.endpoints.http) serves the result; docs/operations.md lists them.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: publish -> ack latency buckets (seconds)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _num(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 2**53):
        return str(int(v))
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v))


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labelnames = name, help, labels

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError

    def render(self) -> str:
        return "\n".join(self.header() + self.samples())


class Counter(_Metric):
    """Monotonic counter; ``inc(*label_values, n=1)``."""

    kind = "counter"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help, labels)
        self.values: dict[tuple[str, ...], float] = {} if labels else {(): 0}

    def inc(self, *labels: str, n: float = 1) -> None:
        v = self.values
        v[labels] = v.get(labels, 0) + n

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0)

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.labelnames, k)} {_num(v)}" for k, v in sorted(self.values.items())]


class Gauge(Counter):
    """A value that goes up and down; ``set(value, *label_values)``. Scrape-time gauges are
    cleared and refilled on every collection."""

    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def clear(self) -> None:
        self.values = {} if self.labelnames else {(): 0}


class Histogram(_Metric):
    """Cumulative histogram without labels (``observe(seconds)``)."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...]) -> None:
        super().__init__(name, help)
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1  # le: a value equal to a bound is in it
        self.sum += value
        self.count += 1

    def samples(self) -> list[str]:
        out, acc = [], 0
        for bound, c in zip((*self.buckets, math.inf), self.counts):
            acc += c
            out.append(f'{self.name}_bucket{{le="{_num(bound) if math.isinf(bound) else repr(float(bound))}"}} {acc}')
        out.append(f"{self.name}_sum {_num(self.sum)}")
        out.append(f"{self.name}_count {self.count}")
        return out


class Metrics:
    """One relay's metrics. The counters are bumped in place by the hub and the sessions."""

    def __init__(self) -> None:
        self.connections = Gauge("colony_connections", "Open connections (native sessions and Yjs connections).")
        self.feeds_loaded = Gauge("colony_feeds_loaded", "Feeds loaded in memory.")
        self.events_in = Counter("colony_events_in_total", "Events accepted (sequenced and stored), by namespace.",
                                 ("namespace",))
        self.events_out = Counter("colony_events_out_total",
                                  "Record frames fanned out to subscribers (one per record per subscriber), by namespace.",
                                  ("namespace",))
        self.publish_latency = Histogram("colony_publish_ack_seconds",
                                         "Seconds from a publish entering the feed queue to its ack.", LATENCY_BUCKETS)
        self.rejected = Counter("colony_rejected_events_total", "Published events refused, by error code.", ("code",))
        self.feed_queue = Gauge("colony_feed_queue_depth", "Jobs waiting in the feed workers' queues (sum over feeds).")
        self.outbox_frames = Gauge("colony_outbox_frames", "Frames queued in native sessions' outboxes (sum).")
        self.redis_round_trips = Counter("colony_redis_round_trips_total",
                                         "Round trips to Redis by the storage (0 unless the backend is redis).")
        self.link_up = Gauge("colony_federation_link_up", "Federation link to a peer: 1 connected, 0 not.", ("peer",))
        self.alarms = Counter("colony_federation_alarms_total", "Federation alarms raised (equivocation etc.).")
        self.component_up = Gauge("colony_component_up",
                                  "A component of the relay (storage, bus, federation): 1 up, 0 down.", ("component",))

    def all(self) -> list[_Metric]:
        return [self.connections, self.feeds_loaded, self.events_in, self.events_out, self.publish_latency,
                self.rejected, self.feed_queue, self.outbox_frames, self.redis_round_trips, self.link_up, self.alarms,
                self.component_up]

    def render(self) -> str:
        return "\n".join(m.render() for m in self.all()) + "\n"


def collect(relay: Any) -> str:
    """Fill the scrape-time values from a running :class:`relay.server.Relay` and render."""
    hub = relay.hub
    m: Metrics = hub.metrics
    m.connections.set(len(relay.sessions))
    m.feeds_loaded.set(len(hub.feeds))
    m.feed_queue.set(sum(len(rt._jobs) for rt in list(hub.feeds.values())))
    frames = 0
    for s in list(relay.sessions):
        out = getattr(s, "out", None)
        q = getattr(out, "frames", None)
        if q is not None:
            frames += len(q)
    m.outbox_frames.set(frames)
    m.redis_round_trips.values[()] = getattr(hub.storage, "round_trips", 0) or 0
    m.link_up.clear()
    fed = relay.federation
    for key, link in (fed.links.items() if fed is not None else ()):
        m.link_up.set(1 if link.connected else 0, key)
    alarms = getattr(fed, "alarms", None) if fed is not None else None
    m.alarms.values[()] = getattr(alarms, "count", 0) or 0
    m.component_up.clear()
    for name, up in relay.health_watch.up.items():  # as of the last health check (GET /metrics does one)
        m.component_up.set(1 if up else 0, name)
    return m.render()
