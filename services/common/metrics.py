"""Prometheus metrics for one service process, and the middleware that records
them and turns every failure into the contract's JSON error.

Each app gets its own registry so that tests may build several apps in one
process. The middleware caches label children: `labels()` takes a lock and
hashes on every call, which the hot path does not need to pay."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .errors import error_response

write_log = logging.getLogger("runway.requests")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Metrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Histogram(
            "runway_http_request_duration_seconds",
            "Request latency by route template, method and status (_count: request count)",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "runway_http_requests_in_flight", "Requests being handled", registry=r
        )
        self.cache = Counter(
            "runway_cache_requests_total",
            "Cache lookups by tier (local, redis) and result (hit, miss, error)",
            ["tier", "result"],
            registry=r,
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
        self._children: dict[tuple[str, str, int], Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, method, str(status))
        child.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    start = time.perf_counter()
    metrics.in_flight.inc()
    try:
        response = await handler(request)
    except Exception as exc:  # every failure leaves as JSON, never a traceback
        response = error_response(request, exc)
    finally:
        metrics.in_flight.dec()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    elapsed = time.perf_counter() - start
    metrics.observe(route, request.method, response.status, elapsed)
    if request.method != "GET" or response.status >= 500:
        # Writes and server errors are logged with the gateway's request id (reads
        # are not: at thousands per second the log would cost more than the answer).
        write_log.info(
            "%s %s %d %.1fms request_id=%s",
            request.method,
            request.path_qs,
            response.status,
            elapsed * 1000,
            request.headers.get("X-Request-Id", "-"),
        )
    return response


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
