"""What bench/scrape.py makes of the services' /metrics counters."""

from __future__ import annotations

from bench import scrape
from services.common.metrics import Metrics


def lag(count: int, seconds: float, buckets: dict[str, int]) -> scrape.CacheCounts:
    counts: scrape.CacheCounts = scrape.Counter()
    counts[("lag", "count")] = count
    counts[("lag", "us")] = int(seconds * 1e6)
    for le, n in buckets.items():
        counts[("lag", "le:" + le)] = n
    return counts


def test_loop_lag_over_a_window() -> None:
    before = lag(100, 0.05, {"0.001": 100, "0.01": 100, "0.025": 100, "+Inf": 100})
    after = lag(300, 0.35, {"0.001": 250, "0.01": 297, "0.025": 299, "+Inf": 300})
    out = scrape.loop_lag(before, after)
    assert out == {"ticks": 200, "mean_ms": 1.5, "over_10ms": 3, "max_under_ms": None}
    before[("lag", "le:0.05")], after[("lag", "le:0.05")] = 100, 300
    assert scrape.loop_lag(before, after)["max_under_ms"] == 50.0
    assert scrape.loop_lag(before, before) == {"ticks": 0}


def test_both_lag_histograms_are_read_apart() -> None:
    """A service's exposition, parsed: the lateness as measured and the net
    one (less the CPU wait) are counted each under its own kind."""
    metrics = Metrics("reviews")
    gross, net = metrics.loop_lag, metrics.loop_lag_net
    for seconds in (0.0005, 0.02, 0.03):
        gross.add(gross.series(), seconds)
    net.add(net.series(), 0.0005)
    total: scrape.CacheCounts = scrape.Counter()
    scrape.add_counts(total, metrics.exposition().decode())
    empty: scrape.CacheCounts = scrape.Counter()
    assert scrape.loop_lag(empty, total)["over_10ms"] == 2
    assert scrape.loop_lag(empty, total, "lagnet") == {
        "ticks": 1,
        "mean_ms": 0.5,
        "over_10ms": 0,
        "max_under_ms": 0.5,
    }


def test_the_hit_ratio_counts_the_misses_that_skip_redis() -> None:
    """A cold walk's first misses skip Redis (admission.py) and are counted
    only as local misses: they are lookups all the same (decision 0062)."""
    metrics = Metrics("overview")
    empty: scrape.CacheCounts = scrape.Counter()
    # 20 local hits, 80 local misses: of those, 10 found in Redis, 5 asked
    # it in vain and 65 skipped it.
    for counter, times in (
        (metrics.cache_hit_local, 20),
        (metrics.cache_miss_local, 80),
        (metrics.cache_hit_redis, 10),
        (metrics.cache_miss_redis, 5),
    ):
        for _ in range(times):
            counter.inc()
    total: scrape.CacheCounts = scrape.Counter()
    scrape.add_counts(total, metrics.exposition().decode())
    assert scrape.hit_ratio(empty, total) == {
        "hit_ratio": 0.3,
        "local_hit_ratio": 0.2,
        "redis_hit_ratio": 0.1,
        "lookups": 100,
        "redis_errors": 0,
    }
    assert scrape.hit_ratio(total, total)["hit_ratio"] is None
