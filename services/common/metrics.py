"""Prometheus metrics for one service process, and the handler wrapper that
records them and turns every failure into the contract's JSON error.

Each app gets its own registry so that tests may build several apps in one
process. The two families touched on every request (request latency, cache
lookups) are kept as plain numbers and exposed by a collector at scrape time:
prometheus_client's own take a lock per update, which only threads need, and
a service updates its metrics on the event loop's one thread. The locks cost
2.6 of 35 us in a cached read (bench/README.md, "Changes")."""

from __future__ import annotations

import gc
import logging
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from itertools import accumulate

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from .errors import error_response

write_log = logging.getLogger("runway.requests")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


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

    def observe(self, seconds: float, *labels: str) -> None:
        self.add(self.series(*labels), seconds)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, acc in list(self._series.items()):
            cumulative = list(accumulate(acc[:-1]))
            les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
            family.add_metric(list(labels), list(zip(les, cumulative, strict=True)), acc[-1])
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
            "Invalidations after writes, by result (ok, degraded: some process did not ack, "
            "failed: Redis unreachable)",
            ["result"],
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


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def observed(handler: Handler, metrics: Metrics, route: str, method: str | None) -> Handler:
    """`handler` wrapped in what every request needs: its latency recorded under
    its route template, method and status, and every failure turned into the
    contract's JSON error, never a traceback. `method` None: the request's own.

    Wrapped once per route at registration instead of a middleware: with any
    middleware at all, aiohttp builds a handler chain and adds one of its own
    on every request, which cost 8 of 40 us in a cached read (bench notes)."""
    latency = metrics.requests
    series: dict[tuple[str, int], list[float]] = {}

    async def observed_handler(request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        metrics.in_flight_count += 1
        try:
            response = await handler(request)
        except Exception as exc:  # every failure leaves as JSON, never a traceback
            response = error_response(request, exc)
        finally:
            metrics.in_flight_count -= 1
        elapsed = time.perf_counter() - start
        request_method = method or request.method
        status = response.status
        key = (request_method, status)
        acc = series.get(key)
        if acc is None:
            acc = series[key] = latency.series(route, request_method, str(status))
        latency.add(acc, elapsed)
        if request_method != "GET" or status >= 500:
            # Writes and server errors are logged with the gateway's request id (reads
            # are not: at thousands per second the log would cost more than the answer).
            write_log.info(
                "%s %s %d %.1fms request_id=%s",
                request_method,
                request.path_qs,
                status,
                elapsed * 1000,
                request.headers.get("X-Request-Id", "-"),
            )
        return response

    return observed_handler


async def metrics_view(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def gc_pause_ctx(app: web.Application) -> AsyncIterator[None]:
    """Times every collection into runway_gc_pause_seconds while the app runs. A
    full collection walks every tracked object, the response cache's included,
    and the event loop stands still meanwhile: a long one shows in the tail
    latency of whatever was in flight."""
    children = [app[METRICS].gc_pauses.labels(str(g)) for g in range(3)]
    started = 0.0

    def on_gc(phase: str, info: dict) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            children[info["generation"]].observe(time.perf_counter() - started)

    gc.callbacks.append(on_gc)
    try:
        yield
    finally:
        gc.callbacks.remove(on_gc)
