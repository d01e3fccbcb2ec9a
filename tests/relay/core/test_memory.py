"""relay.core.memory: malloc_trim after big drops, throttled to one trim a second."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from relay.core.memory import TRIMMER, Trimmer
from tests.wait import eventually


def test_glibc_here_has_malloc_trim() -> None:
    assert TRIMMER.available  # the relay runs on glibc on this machine (Debian)


async def test_requests_within_the_interval_share_one_trim() -> None:
    calls: list[int] = []

    def fake_libc_trim(pad: int) -> int:  # counts calls; the real one is exercised below
        calls.append(pad)
        return 1

    t = Trimmer(fake_libc_trim, min_interval=0.2)
    for _ in range(100):
        t.release_soon()
    await eventually(lambda: calls == [0], 5, "the first trim (at once: nothing trimmed before)")
    for _ in range(100):
        t.release_soon()
    await asyncio.sleep(0.05)
    assert calls == [0]  # the second waits for the interval
    await eventually(lambda: len(calls) == 2, 5, "the second trim, one interval after the first")
    await asyncio.sleep(0.3)
    assert calls == [0, 0] and t.trims == 2  # and no third


async def test_no_library_no_trim() -> None:
    t = Trimmer(None)
    assert not t.available and t.trim_now() is False
    t.release_soon()  # nothing scheduled, nothing raised


_PROBE = """
import ctypes, json
from relay.core.memory import TRIMMER

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

# ~60 MB in 100 KB blocks (below glibc's mmap threshold: they come from the heap), each followed
# by a 1 KB block that stays (over 512 bytes: from the C heap, not pymalloc): the freed space is
# never at the heap's top, so free() alone cannot give it back -- a dropped outbox among live objects
blocks, pins = [], []
for _ in range(600):
    b = ctypes.create_string_buffer(100_000)
    b.raw = b"x" * 100_000
    blocks.append(b)
    pins.append(ctypes.create_string_buffer(1024))
held = rss_kib()
del blocks, b
freed = rss_kib()
TRIMMER.trim_now()
print(json.dumps({"held": held, "freed": freed, "trimmed": rss_kib(), "pins": len(pins)}))
"""


def test_a_real_trim_gives_freed_heap_pages_back() -> None:
    """In a fresh process (the allocator's state of a long test run would blur the figures)."""
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    m = json.loads(out.stdout)
    assert m["freed"] > m["held"] - 20_000, m  # glibc kept the freed pages...
    assert m["trimmed"] < m["freed"] - 40_000, m  # ...until the trim
