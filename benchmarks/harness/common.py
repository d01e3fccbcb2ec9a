"""Constants and the scenario shared by every benchmark (servers' limits, feed names, clock).
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
FEED = "doc/bench"
ROOM = "/bench"
COLONY = "colony"
PEER = "pycrdt-websocket"
SYSTEMS = (PEER, COLONY)
#: Colony's HTTP doors (bench_http.py): writers POST /feeds/{feed}/events, subscribers read
#: GET /feeds/{feed}/stream (Server-Sent Events); the server is the same ``colony serve``
COLONY_HTTP = "colony-http"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MARK_RE = re.compile(rb"w\d\dn\d{8};")
NS = 1_000_000_000

# Colony limits for the benchmark: rate limits high enough to never trigger (the per-feed rate
# too), a doc quota no run reaches (at saturation a doc passes the default 16 MiB in about 20 s,
# and what is refused after it would count as published), a deep outbox.
COLONY_ARGS = [
    "--events-per-sec-key", "100000", "--burst-key", "100000",
    "--events-per-sec-ip", "1000000", "--burst-ip", "1000000",
    "--events-per-sec-feed", "1000000", "--burst-feed", "1000000",
    "--max-doc-bytes", str(1 << 30),
    "--max-outbound-frames", "100000",
]


@dataclass(frozen=True)
class Scenario:
    name: str
    subscribers: int
    writers: int
    rate: float | None  # edits/s per writer; None = as fast as the window allows
    window: int  # max unacknowledged updates per writer
    duration: float  # measured seconds
    warmup: float  # seconds of load before the measured window
    docs: int = 1  # doc feeds: writer k publishes to and subscriber i reads doc_feed(k or i, docs)
    feed: str = FEED  # the (base) feed; outside ``doc/`` writers publish generic ``bench.note`` events


def doc_of(idx: int, docs: int) -> int:
    """The doc (0..docs-1) of writer or subscriber ``idx``: ``idx % docs``."""
    return idx % docs


def doc_feed(idx: int, docs: int, base: str = FEED) -> str:
    """The feed of writer or subscriber ``idx``: ``base`` (:data:`FEED`) with one doc (so results
    stay comparable with the single-doc runs), else ``doc/bench-{idx % docs}``."""
    return base if docs <= 1 else f"{base}-{doc_of(idx, docs)}"


def now_ns() -> int:
    return time.monotonic_ns()
