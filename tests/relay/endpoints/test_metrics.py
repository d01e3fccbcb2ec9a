"""GET /metrics: Prometheus text exposition 0.0.4, values that move under real load; JSON logs."""
from __future__ import annotations

import json
import logging
import re

import httpx
import pytest
from pycrdt import Doc, Text

from collab.client import Client
from collab.errors import RelayError
from collab.events import b64
from collab.keys import Keypair
from relay.ops.logging_json import JsonFormatter
from relay.ops.runner import Running
from tests.relay.promtext import parse, value

NAMES = {
    "colony_connections": "gauge",
    "colony_feeds_loaded": "gauge",
    "colony_feeds_evicted_total": "counter",
    "colony_refused_total": "counter",
    "colony_events_in_total": "counter",
    "colony_events_out_total": "counter",
    "colony_publish_ack_seconds": "histogram",
    "colony_rejected_events_total": "counter",
    "colony_feed_queue_depth": "gauge",
    "colony_outbox_frames": "gauge",
    "colony_redis_round_trips_total": "counter",
    "colony_federation_link_up": "gauge",
    "colony_federation_alarms_total": "counter",
    "colony_component_up": "gauge",
    "colony_verifier_requests_total": "counter",
    "colony_verifier_restarts_total": "counter",
}

async def scrape(r: Running) -> tuple[dict[str, str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{r.url}/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(resp.text)


def doc_update(text: str) -> dict[str, str]:
    d = Doc()
    d.get("text", type=Text).insert(0, text)
    return {"update": b64(d.get_update())}


async def test_endpoint_lists_every_metric(relay: Running) -> None:
    types, samples = await scrape(relay)
    for name, kind in NAMES.items():
        assert types.get(name) == kind, name
    assert value(samples, "colony_connections") == 0
    assert value(samples, "colony_component_up", component="storage") == 1
    assert value(samples, "colony_component_up", component="bus") == 1
    assert (value(samples, "colony_publish_ack_seconds_bucket", le="+Inf")
            == value(samples, "colony_publish_ack_seconds_count"))
    # prometheus_client's process and GC collectors ride along
    assert types.get("process_cpu_seconds_total") == "counter"
    assert value(samples, "process_resident_memory_bytes") > 0
    assert types.get("python_gc_collections_total") == "counter"
    assert types.get("python_info") == "gauge"


async def test_openmetrics_when_asked(relay: Running) -> None:
    """The Accept header picks the format, as prometheus_client negotiates it."""
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{relay.url}/metrics",
                              headers={"accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    body = resp.text
    assert body.endswith("# EOF\n")
    assert "# TYPE colony_events_in counter\n" in body  # OpenMetrics names the family without _total
    assert "# TYPE colony_publish_ack_seconds histogram\n" in body
    assert "colony_redis_round_trips_total " in body


async def test_values_move_under_load(relay: Running) -> None:
    n = 20
    feed = "doc/metrics"
    _, before = await scrape(relay)
    async with Client(relay.url, Keypair.generate()) as writer, Client(relay.url, Keypair.generate()) as reader:
        got: list[int] = []
        sub = await reader.subscribe(feed, on_record=lambda rec: got.append(rec.seq))
        await sub.wait_synced(5)
        for i in range(n):
            await writer.publish(feed, "doc.update", doc_update(f"line {i}"))
        with pytest.raises(RelayError) as refused:
            await writer.publish(feed, "chat.say", {"text": "not a doc update"})
        code = refused.value.code
        _, after = await scrape(relay)
        assert value(after, "colony_connections") == 2
        assert value(after, "colony_feeds_loaded") >= 1

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("colony_events_in_total", namespace="doc") == n
    assert delta("colony_events_out_total", namespace="doc") == n  # one subscriber
    assert delta("colony_publish_ack_seconds_count") == n
    assert delta("colony_publish_ack_seconds_sum") > 0
    assert delta("colony_publish_ack_seconds_bucket", le="10.0") == n
    assert delta("colony_rejected_events_total", code=code) == 1
    assert value(after, "colony_feed_queue_depth") >= 0
    assert value(after, "colony_outbox_frames") >= 0
    if relay.relay.storage.name == "redis":
        assert delta("colony_redis_round_trips_total") > 0
    else:
        assert value(after, "colony_redis_round_trips_total") == 0
    assert value(after, "colony_federation_alarms_total") == 0
    # every publish's signature was checked and every receipt signed, in the child or in-process (small)
    work = sum(delta("colony_verifier_requests_total", where=w) for w in ("child", "small", "fallback"))
    assert work >= n, "signature checks are not counted"
    assert value(after, "colony_verifier_restarts_total") == 0


def test_json_formatter() -> None:
    fmt = JsonFormatter()
    rec = logging.LogRecord("relay.core.worker", logging.WARNING, __file__, 1, "append to %s failed\nx", ("doc/a",),
                            None)
    line = fmt.format(rec)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["level"] == "WARNING" and obj["logger"] == "relay.core.worker"
    assert obj["message"] == "append to doc/a failed\nx"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00\Z", obj["ts"])
    assert "exc_info" not in obj
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("relay", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    obj = json.loads(fmt.format(rec))
    assert isinstance(obj["exc_info"], str) and "ValueError: boom" in obj["exc_info"]
