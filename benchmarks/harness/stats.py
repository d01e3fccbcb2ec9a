"""Statistics and reporting helpers: latency percentiles and timelines, ratios, medians,
formatting, the machine description, scenario overrides from the command line.
"""
from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .common import NS


# ---------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------
def pct(sorted_vals: list[int], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(p / 100.0 * (len(sorted_vals) - 1))))
    return sorted_vals[k] / 1e6


def lat_summary(vals: list[int]) -> dict[str, float]:
    vals.sort()
    return {
        "n": len(vals), "p50": pct(vals, 50), "p90": pct(vals, 90), "p99": pct(vals, 99),
        "p999": pct(vals, 99.9), "max": vals[-1] / 1e6 if vals else float("nan"),
        "mean": (sum(vals) / len(vals) / 1e6) if vals else float("nan"),
    }


BUCKET_NS = 250_000_000


def timeline(buckets: dict[int, list[int]]) -> dict[str, Any]:
    """Is the tail spread evenly or made of a few bad moments? p99 per 250 ms of send time."""
    p99s = []
    for k in sorted(buckets):
        v = sorted(buckets[k])
        p99s.append((k * BUCKET_NS / NS, pct(v, 99), len(v)))
    worst = sorted(p99s, key=lambda x: -x[1])[:5]
    return {
        "bucket_s": BUCKET_NS / NS,
        "buckets": len(p99s),
        "buckets_p99_over_20ms": sum(1 for _, p, _ in p99s if p > 20),
        "median_bucket_p99_ms": sorted(p for _, p, _ in p99s)[len(p99s) // 2] if p99s else None,
        "worst": [{"t_s": round(t, 2), "p99_ms": round(p, 2), "n": n} for t, p, n in worst],
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


def median(vals: list[Any]) -> Any:
    v = sorted(x for x in vals if x is not None and x == x)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def fmt(v: Any, spec: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def machine(extra_versions: tuple[str, ...] = ()) -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("pycrdt", "pycrdt-websocket", "websockets", "uvicorn", "uvloop", "starlette", "PyNaCl",
                *extra_versions):
        try:
            versions[mod] = version(mod)
        except PackageNotFoundError:  # not installed: recorded as such
            versions[mod] = None
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def scenarios_from_args(base: dict[str, Any], names: list[str], args: Any, ap: Any) -> list[Any]:
    """The named base scenarios with the command line's overrides applied (shared by every
    benchmark script): duration, warm-up, subscribers, writers and docs (if the script has
    ``--docs``) always; the rate only for fixed-rate scenarios and the window only for
    as-fast-as-possible ones."""
    from dataclasses import replace

    scenarios = []
    for name in names:
        sc = base[name]
        over: dict[str, Any] = {k: v for k, v in (("duration", args.duration), ("warmup", args.warmup),
                                                  ("subscribers", args.subscribers), ("writers", args.writers),
                                                  ("docs", getattr(args, "docs", None)))
                                if v is not None}
        if getattr(args, "rate", None) is not None and sc.rate is not None:
            over["rate"] = args.rate
        if getattr(args, "window", None) is not None and sc.rate is None:
            over["window"] = args.window
        scenarios.append(replace(sc, **over))
    if any(s.writers > 100 for s in scenarios):
        ap.error("at most 100 writers (markers carry a 2-digit writer number)")
    for s in scenarios:
        if not 1 <= s.docs <= min(s.writers, s.subscribers):
            ap.error(f"{s.name}: docs must be between 1 and min(writers, subscribers) = "
                     f"{min(s.writers, s.subscribers)}, not {s.docs}")
    return scenarios
