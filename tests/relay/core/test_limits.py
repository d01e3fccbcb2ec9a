"""relay/core/limits.py: the advertised limits and token-bucket rate limiting (pure, no sleeps:
rates are chosen so refill is either negligible or immediate)."""
from __future__ import annotations

from dataclasses import fields

from relay.core.limits import Limits, RateLimiter, TokenBucket, YjsLimits


def test_limits_advertise_every_field() -> None:
    lim = Limits(max_frame_bytes=10, burst_key=3)
    assert lim.to_json()["max_frame_bytes"] == 10 and lim.to_json()["burst_key"] == 3
    assert Limits.names() == [f.name for f in fields(Limits)] == list(lim.to_json())
    assert set(YjsLimits().to_json()) == {f.name for f in fields(YjsLimits)}


def test_a_bucket_allows_its_burst_then_refuses() -> None:
    b = TokenBucket(rate=1e-9, burst=3)  # refill: nothing worth counting during the test
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    assert not b.take(0.5)


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    b = TokenBucket(rate=1e12, burst=2)  # refills at once
    assert all(b.take() for _ in range(100))
    b.take(0)
    assert b.tokens <= 2.0
    assert not b.take(3)  # never more than the burst


def test_the_limiter_keeps_one_bucket_per_key() -> None:
    lim = RateLimiter(rate=1e-9, burst=2)
    assert [lim.allow("a") for _ in range(3)] == [True, True, False]
    assert lim.allow("b") and lim.allow("b") and not lim.allow("b")


def test_a_refund_gives_back_a_token_up_to_the_burst() -> None:
    lim = RateLimiter(rate=1e-9, burst=2)
    assert lim.allow("a") and lim.allow("a") and not lim.allow("a")
    lim.refund("a")  # the publish it paid for was a duplicate
    assert lim.allow("a") and not lim.allow("a")
    lim.refund("a", 5)
    assert [lim.allow("a") for _ in range(3)] == [True, True, False]  # never more than the burst
    lim.refund("nobody")  # no bucket: nothing to give back, nothing created
    assert "nobody" not in lim._buckets


def test_the_limiter_stays_bounded_by_dropping_buckets() -> None:
    lim = RateLimiter(rate=1e-9, burst=1, max_buckets=10)
    for i in range(100):
        assert lim.allow(f"k{i}")
        assert len(lim._buckets) <= 10
