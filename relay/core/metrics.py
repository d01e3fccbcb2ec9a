"""The relay's metrics: hot-path accumulators and one ``prometheus_client`` registry per relay.

Each relay owns one :class:`Metrics`, and each :class:`Metrics` owns its own
``prometheus_client.CollectorRegistry`` (several relays in one process stay apart; the library's
global default registry is never touched). The registry holds this relay's collector, which
yields the Colony metrics listed in docs/operations.md, and the library's process, platform and
GC collectors. ``prometheus_client`` writes the exposition: the text format 0.0.4 by default,
OpenMetrics (or text 1.0.0) when the scraper's ``Accept`` header asks for it
(``relay.endpoints.metrics.expose``, ``prometheus_client.exposition.choose_encoder``).

The values the feed workers and sessions bump on the hot path (per event, per batch) live in
plain accumulators — :class:`Counter`, :class:`Gauge` and :class:`Histogram` below, one dict
``get`` and store per bump — and become ``prometheus_client`` metric families when scraped.
The library's own ``Counter``/``Histogram`` objects take a lock per update (measured: a labelled
``inc`` ~4 us and a histogram ``observe`` ~2 us, against ~0.6 us and ~0.2 us here), and would add
``*_created`` series that are not part of the documented set. Gauges that describe the relay's
current state are filled in at scrape time by ``relay.endpoints.metrics`` (``GET /metrics``).
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

#: the content type of the default (text 0.0.4) exposition
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: publish -> ack latency buckets (seconds)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Metric:
    """One metric's accumulator: a name, a help text, label names, and a family when scraped."""

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labelnames = name, help, labels

    def family(self) -> Metric:
        raise NotImplementedError

    def render(self) -> str:
        """This metric alone in the text format 0.0.4 (no trailing newline; tests and debugging)."""
        return generate_latest(_Families([self])).decode().rstrip("\n")


class Counter(_Metric):
    """Monotonic counter; ``inc(*label_values, n=1)``."""

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help, labels)
        self.values: dict[tuple[str, ...], float] = {} if labels else {(): 0}

    def inc(self, *labels: str, n: float = 1) -> None:
        v = self.values
        v[labels] = v.get(labels, 0) + n

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0)

    def family(self) -> Metric:
        fam = CounterMetricFamily(self.name, self.help, labels=self.labelnames)
        for key, v in sorted(self.values.items()):
            fam.add_metric(list(key), v)
        return fam


class Gauge(Counter):
    """A value that goes up and down; ``set(value, *label_values)``. Scrape-time gauges are
    cleared and refilled on every collection."""

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def clear(self) -> None:
        self.values = {} if self.labelnames else {(): 0}

    def family(self) -> Metric:
        fam = GaugeMetricFamily(self.name, self.help, labels=self.labelnames)
        for key, v in sorted(self.values.items()):
            fam.add_metric(list(key), v)
        return fam


class Histogram(_Metric):
    """Cumulative histogram without labels (``observe(seconds)``)."""

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

    def family(self) -> Metric:
        cumulative: list[tuple[str, float]] = []
        acc = 0
        for bound, c in zip((*self.buckets, float("inf")), self.counts, strict=True):
            acc += c
            cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), acc))
        return HistogramMetricFamily(self.name, self.help, buckets=cumulative, sum_value=self.sum)


class _Families(Collector):
    """A collector over accumulators: each scrape turns them into metric families."""

    def __init__(self, metrics: Iterable[_Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        for m in self.metrics:
            yield m.family()


class Metrics:
    """One relay's metrics and its registry. The counters are bumped in place by the hub and
    the sessions; ``relay.endpoints.metrics`` fills the gauges when scraped."""

    def __init__(self) -> None:
        self.connections = Gauge("colony_connections", "Open connections (native sessions and Yjs connections).")
        self.feeds_loaded = Gauge("colony_feeds_loaded", "Feeds loaded in memory.")
        self.feeds_evicted = Counter("colony_feeds_evicted_total",
                                     "Idle feeds unloaded early to stay within max_loaded_feeds.")
        self.refused = Counter("colony_refused_total",
                               "Connections and requests refused before anything was allocated for them, by code "
                               "(too_many_connections, busy, rate_limited for subscriptions).", ("code",))
        self.events_in = Counter("colony_events_in_total", "Events accepted (sequenced and stored), by namespace.",
                                 ("namespace",))
        self.events_out = Counter("colony_events_out_total",
                                  "Record frames fanned out to subscribers (one per record per subscriber), "
                                  "by namespace.",
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
        self.yjs_refused = Counter("colony_yjs_refused_total",
                                   "Yjs updates the sandbox refused (never stored, never folded), by verdict: "
                                   "bad, panic, crash, timeout; quarantined counts stored records left out.",
                                   ("verdict",))
        self.sandbox_restarts = Gauge("colony_yjs_sandbox_restarts", "Restarts of the Yjs sandbox's child processes.")
        self.verifier_requests = Counter("colony_verifier_requests_total",
                                         "Signature work by where it was done: child (a request to the verifier "
                                         "child, a batch of checks or receipts), small (a request too small for a "
                                         "round trip, made in-process), fallback (a batch of checks made in-process "
                                         "while the child was not there).", ("where",))
        self.verifier_restarts = Counter("colony_verifier_restarts_total",
                                         "Times the signature verifier child was lost (it is started again).")
        self.registry = CollectorRegistry()
        self.registry.register(_Families(self.all()))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def all(self) -> list[_Metric]:
        return [self.connections, self.feeds_loaded, self.feeds_evicted, self.refused, self.events_in,
                self.events_out, self.publish_latency,
                self.rejected, self.feed_queue, self.outbox_frames, self.redis_round_trips, self.link_up, self.alarms,
                self.component_up, self.yjs_refused, self.sandbox_restarts, self.verifier_requests,
                self.verifier_restarts]

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The registry's exposition for a scraper's ``Accept`` header, and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
