"""The services' own cache counters (runway_cache_requests_total{tier,result})
scraped from every instance's /metrics, and the hit ratio of a window."""

from __future__ import annotations

import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

CacheCounts = Counter[tuple[str, str]]


def scrape_cache(ports: list[int]) -> CacheCounts:
    total: CacheCounts = Counter()
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
                text = r.read().decode()
        except OSError:
            continue  # an instance down is visible in errors, not here
        for family in text_string_to_metric_families(text):
            if family.name != "runway_cache_requests":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["tier"], sample.labels["result"])
                    total[key] += int(sample.value)
    return total


def hit_ratio(before: CacheCounts, after: CacheCounts) -> dict[str, float | int | None]:
    """Served from a cache tier / lookups that were served at all.

    A lookup checks the local tier (hit or miss) then Redis (hit, miss or
    error); a Redis miss or error goes to Postgres. So: hits = local hit +
    redis hit, and misses = redis miss + redis error."""
    delta = {k: after[k] - before.get(k, 0) for k in after}
    hits = delta.get(("local", "hit"), 0) + delta.get(("redis", "hit"), 0)
    misses = delta.get(("redis", "miss"), 0) + delta.get(("redis", "error"), 0)
    local = delta.get(("local", "hit"), 0) + delta.get(("local", "miss"), 0)
    return {
        "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        "local_hit_ratio": round(delta.get(("local", "hit"), 0) / local, 4) if local else None,
        "lookups": hits + misses,
        "redis_errors": delta.get(("redis", "error"), 0),
    }
