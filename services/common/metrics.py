"""The Prometheus metrics of one service process: their definitions and their
exposition (`Metrics.exposition`, served at /metrics).

Each app gets its own registry so that tests may build several apps in one
process. The two families touched on every request (request latency, cache
lookups) are kept as plain numbers and exposed by a collector at scrape time:
prometheus_client's own take a lock per update, which only threads need, and
a service updates its metrics on the event loop's one thread. The locks cost
2.6 of 35 us in a cached read (docs/decisions/0006-handlers-wrapped-at-registration.md).

Each is updated where its work happens: observe.py (requests), cache.py
(lookups, invalidations), db.py and resources.py (pool), resources.py and
app.py (garbage collector). With read replicas, replicas.py registers its own
families on the same registry (runway_db_reads_total, plain numbers like the
cache's; replica_probe.py the runway_db_replica_* gauges)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

# The Content-Type of `Metrics.exposition()`'s bytes.
EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST
OPENMETRICS_CONTENT_TYPE = openmetrics.CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
# How late the 10 ms loop-lag timer fires (resources.loop_lag_ctx); shares the
# GC bounds, so "over 10 ms" reads the same way for both.
LOOP_LAG_BUCKETS = GC_BUCKETS


class LoopHistogram:
    """A labelled histogram family updated without locks (event-loop thread only).
    Each series is one list: a count per bucket (the last one +Inf), then the sum."""

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        doc: str,
        labelnames: list[str],
        bounds: tuple[float, ...],
    ) -> None:
        self.name, self.doc, self.labelnames, self.bounds = name, doc, labelnames, bounds
        self._series: dict[tuple[str, ...], list[float]] = {}
        # With tracing on (otel.py): per series (by id of its list), the last
        # traced observation in each bucket as (trace id, seconds, unix time).
        self._exemplars: dict[int, list[tuple[str, float, float] | None]] = {}
        registry.register(self)

    def series(self, *labels: str) -> list[float]:
        """One series, for `add` (a hot path keeps it rather than look it up each time)."""
        acc = self._series.get(labels)
        if acc is None:
            acc = self._series[labels] = [0] * (len(self.bounds) + 1) + [0.0]
        return acc

    def add(self, acc: list[float], seconds: float) -> None:
        acc[bisect_left(self.bounds, seconds)] += 1
        acc[-1] += seconds

    def add_traced(self, acc: list[float], seconds: float, trace_id: str, now: float) -> None:
        """`add`, keeping the observation as its bucket's exemplar (tracing on only)."""
        index = bisect_left(self.bounds, seconds)
        acc[index] += 1
        acc[-1] += seconds
        exemplars = self._exemplars.get(id(acc))
        if exemplars is None:
            exemplars = self._exemplars[id(acc)] = [None] * (len(self.bounds) + 1)
        exemplars[index] = (trace_id, seconds, now)

    def observe(self, seconds: float, *labels: str) -> None:
        self.add(self.series(*labels), seconds)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, acc in list(self._series.items()):
            cumulative = list(accumulate(acc[:-1]))
            les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
            buckets: list = list(zip(les, cumulative, strict=True))
            exemplars = self._exemplars.get(id(acc))
            if exemplars is not None:  # only shown in the OpenMetrics exposition
                buckets = [
                    (le, n, Exemplar({"trace_id": ex[0]}, ex[1], ex[2]))
                    if ex is not None
                    else (le, n)
                    for (le, n), ex in zip(buckets, exemplars, strict=True)
                ]
            family.add_metric(list(labels), buckets, acc[-1])
        yield family


class LoopCount:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class LoopCounter:
    """A labelled counter family updated without locks (event-loop thread only)."""

    def __init__(
        self, registry: CollectorRegistry, name: str, doc: str, labelnames: list[str]
    ) -> None:
        self.name, self.doc, self.labelnames = name, doc, labelnames
        self._children: dict[tuple[str, ...], LoopCount] = {}
        registry.register(self)

    def labels(self, *labels: str) -> LoopCount:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = LoopCount()
        return child

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, child in list(self._children.items()):
            family.add_metric(list(labels), child.value)
        yield family


class Metrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = LoopHistogram(
            r,
            "runway_http_request_duration_seconds",
            "Request latency by route template, method and status (_count: request count)",
            ["route", "method", "status"],
            LATENCY_BUCKETS,
        )
        self.in_flight = Gauge(
            "runway_http_requests_in_flight", "Requests being handled", registry=r
        )
        # A plain counter, read at scrape time: no lock taken twice per request.
        self.in_flight_count = 0
        self.in_flight.set_function(lambda: self.in_flight_count)
        self.cache = LoopCounter(
            r,
            "runway_cache_requests",
            "Cache lookups by tier (local, redis) and result (hit, miss, error)",
            ["tier", "result"],
        )
        self.cache_invalidations = Counter(
            "runway_cache_invalidations_total",
            "Invalidation calls to Redis, each for one or more writes (cache/grouping.py), by "
            "result (ok; failed: Redis unreachable or, on a "
            "cluster, no replica confirmed: replayed)",
            ["result"],
            registry=r,
        )
        self.cache_outbox_relayed = Counter(
            "runway_cache_outbox_relayed_total",
            "Writes whose invalidation the outbox relay made because their writer did not "
            "confirm it (died after its commit, or lost Redis)",
            registry=r,
        )
        self.cache_outbox_relay_errors = Counter(
            "runway_cache_outbox_relay_errors_total",
            "Outbox relay rounds that failed (Postgres or Redis unreachable): the rows wait",
            registry=r,
        )
        self.cache_local_bytes = Gauge(
            "runway_cache_local_bytes", "Bytes held by the in-process cache tier", registry=r
        )
        self.pool_size = Gauge("runway_db_pool_size", "Connections open in the pool", registry=r)
        self.pool_idle = Gauge("runway_db_pool_idle", "Idle connections in the pool", registry=r)
        self.pool_max = Gauge("runway_db_pool_max", "Pool size limit", registry=r)
        self.pool_acquire = Histogram(
            "runway_db_pool_acquire_seconds",
            "Time spent waiting for a pooled connection",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_pauses = Histogram(
            "runway_gc_pause_seconds",
            "Garbage-collector pauses by generation: the event loop stands still meanwhile",
            ["generation"],
            buckets=GC_BUCKETS,
            registry=r,
        )
        # Plain numbers (one observation per 10 ms timer tick, on the loop's thread).
        self.loop_lag = LoopHistogram(
            r,
            "runway_event_loop_lag_seconds",
            "How late a timer due every 10 ms ran: the event loop was busy (a long "
            "callback, a GC pause, a batch) for that long past its due time",
            [],
            LOOP_LAG_BUCKETS,
        )
        self.loop_lag_net = LoopHistogram(
            r,
            "runway_event_loop_lag_net_seconds",
            "runway_event_loop_lag_seconds less the time the process waited for a CPU "
            "(run queue) since the previous tick: the loop's own stall, a lower bound",
            [],
            LOOP_LAG_BUCKETS,
        )
        self.gc_frozen = Gauge(
            "runway_gc_frozen_objects",
            "Objects alive at start-up that the collector no longer walks (gc.freeze)",
            registry=r,
        )
        self.info = Gauge(
            "runway_service_info", "Which service this process is", ["service"], registry=r
        )
        self.info.labels(service).set(1)
        self.cache_hit_local = self.cache.labels("local", "hit")
        self.cache_miss_local = self.cache.labels("local", "miss")
        self.cache_hit_redis = self.cache.labels("redis", "hit")
        self.cache_miss_redis = self.cache.labels("redis", "miss")
        self.cache_error_redis = self.cache.labels("redis", "error")

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def openmetrics_exposition(self) -> bytes:
        """The OpenMetrics text (with the latency histograms' exemplars), served
        to a scraper that asks for it while tracing is on."""
        return openmetrics.generate_latest(self.registry)
