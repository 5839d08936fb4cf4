"""The metric names the services really export, read from a live Metrics
registry, and the names a PromQL expression refers to."""

from __future__ import annotations

import re

from services.common.metrics import Metrics

# Series Prometheus itself provides for every target.
PROMETHEUS_BUILTINS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def exported_names() -> set[str]:
    """Every sample name a service's /metrics can carry (each labelled family
    gets one child so that it shows its samples)."""
    metrics = Metrics("probe")
    metrics.requests.observe(0.01, "/probe", "GET", "200")
    metrics.cache_invalidations.labels("ok").inc()
    metrics.pool_acquire.observe(0.001)
    names = set()
    for family in metrics.registry.collect():
        names.update(sample.name for sample in family.samples)
    return names


def metric_names(expr: str) -> set[str]:
    """Names in a PromQL expression that stand for series (runway_* and builtins)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "[]", without_strings)
    # Whole identifiers only: recording rules such as job:runway_errors:rate5m
    # contain "runway_" too, but are not series a service exports.
    idents = set(re.findall(r"(?<![\w:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])", without_ranges))
    return {n for n in idents if n.startswith("runway_") or n in PROMETHEUS_BUILTINS}


# The exporters' families (infra/exporters.py): checked against the running
# exporters by tests/infra/test_exporters.py.
EXPORTER_PREFIXES = ("nginx_", "redis_", "pg_")


def exporter_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    idents = set(re.findall(r"(?<![\w:])([a-zA-Z_][a-zA-Z0-9_]*)(?![\w:])", without_strings))
    return {n for n in idents if n.startswith(EXPORTER_PREFIXES)}
