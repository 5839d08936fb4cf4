"""The services' own cache counters (runway_cache_requests_total{tier,result}),
reads by server with read replicas (runway_db_reads_total{server,reason})
garbage-collector pauses (runway_gc_pause_seconds{generation}) and event-loop
lag (runway_event_loop_lag_seconds: how late a 10 ms timer ran; _net_seconds:
the same less the time the process waited for a CPU) scraped from
every instance's /metrics, and what they amount to over a window."""

from __future__ import annotations

import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

CacheCounts = Counter[tuple[str, str]]

LONG_PAUSE_S = 0.01  # a GC_BUCKETS bound in services/common/metrics.py
# Lateness as measured, and less the time spent waiting for a CPU (the loop's own stall).
LAG_FAMILIES = {
    "runway_event_loop_lag_seconds": "lag",
    "runway_event_loop_lag_net_seconds": "lagnet",
}


def scrape_cache(ports: list[int]) -> CacheCounts:
    total: CacheCounts = Counter()
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
                text = r.read().decode()
        except OSError:
            continue  # an instance down is visible in errors, not here
        add_counts(total, text)
    return total


def add_counts(total: CacheCounts, text: str) -> None:
    """Add one instance's exposition `text` to `total`."""
    for family in text_string_to_metric_families(text):
        if family.name == "runway_cache_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["tier"], sample.labels["result"])
                    total[key] += int(sample.value)
        elif family.name == "runway_db_reads":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    where = f"{sample.labels['server']}:{sample.labels['reason']}"
                    total[("db", where)] += int(sample.value)
        elif family.name == "runway_gc_pause_seconds":
            for sample in family.samples:
                if sample.labels.get("generation") != "2":
                    continue  # young collections are short; full ones walk everything
                if sample.name.endswith("_count"):
                    total[("gc2", "count")] += int(sample.value)
                elif sample.name.endswith("_sum"):
                    total[("gc2", "us")] += int(sample.value * 1e6)
                elif sample.labels.get("le") == str(LONG_PAUSE_S):
                    total[("gc2", "short")] += int(sample.value)
        elif family.name in LAG_FAMILIES:
            kind = LAG_FAMILIES[family.name]
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    total[(kind, "count")] += int(sample.value)
                elif sample.name.endswith("_sum"):
                    total[(kind, "us")] += int(sample.value * 1e6)
                elif sample.name.endswith("_bucket"):
                    total[(kind, "le:" + sample.labels["le"])] += int(sample.value)


def gc_pauses(before: CacheCounts, after: CacheCounts) -> dict[str, float | int | None]:
    """Full collections in the window, summed over the instances: how many, their
    mean pause and how many stopped a loop for over LONG_PAUSE_S."""
    count = after[("gc2", "count")] - before[("gc2", "count")]
    us = after[("gc2", "us")] - before[("gc2", "us")]
    short = after[("gc2", "short")] - before[("gc2", "short")]
    return {
        "full_collections": count,
        "mean_ms": round(us / count / 1000, 2) if count else None,
        f"over_{int(LONG_PAUSE_S * 1000)}ms": count - short,
    }


def loop_lag(
    before: CacheCounts, after: CacheCounts, kind: str = "lag"
) -> dict[str, float | int | None]:
    """Event-loop lag in the window, over the instances' 10 ms timer ticks: how
    many ticks, their mean lateness, how many ran over LONG_PAUSE_S late (the
    loop stood still that long: a GC pause, a long callback, a batch), and the
    bucket bound under which the worst one fell."""

    def delta(key: str) -> int:
        return after[(kind, key)] - before.get((kind, key), 0)

    count = delta("count")
    if not count:
        return {"ticks": 0}
    bounds = sorted((float(k[3:]), k) for (kd, k) in after if kd == kind and k.startswith("le:"))
    under_long = delta(f"le:{LONG_PAUSE_S}")
    worst = next((b for b, k in bounds if delta(k) == count), None)
    return {
        "ticks": count,
        "mean_ms": round(delta("us") / count / 1000, 3),
        f"over_{int(LONG_PAUSE_S * 1000)}ms": count - under_long,
        "max_under_ms": worst * 1000 if worst is not None and worst != float("inf") else None,
    }


def db_reads(before: CacheCounts, after: CacheCounts) -> dict[str, int]:
    """Cache-miss reads by where they ran (with read replicas): `replica:`, or
    `primary:<why>`; empty without replicas."""
    return {
        where: after[("db", where)] - before.get(("db", where), 0)
        for (kind, where) in after
        if kind == "db" and after[("db", where)] - before.get(("db", where), 0)
    }


def hit_ratio(before: CacheCounts, after: CacheCounts) -> dict[str, float | int | None]:
    """Served from a cache tier / lookups.

    Every lookup checks the local tier first (hit or miss); a local miss
    may then ask Redis (hit, miss or error), or skip it (a first miss, not
    admitted: services/common/cache/admission.py) and go to Postgres. So:
    lookups = local hit + local miss, and hits = local hit + redis hit
    (decision 0062: hits + Redis misses, the denominator before, leaves out
    the misses that skip Redis)."""
    delta = {k: after[k] - before.get(k, 0) for k in after}
    local_hits = delta.get(("local", "hit"), 0)
    hits = local_hits + delta.get(("redis", "hit"), 0)
    lookups = local_hits + delta.get(("local", "miss"), 0)
    return {
        "hit_ratio": round(hits / lookups, 4) if lookups else None,
        "local_hit_ratio": round(local_hits / lookups, 4) if lookups else None,
        "redis_hit_ratio": round(delta.get(("redis", "hit"), 0) / lookups, 4) if lookups else None,
        "lookups": lookups,
        "redis_errors": delta.get(("redis", "error"), 0),
    }
