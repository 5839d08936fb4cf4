"""OpenTelemetry for a serving process, imported only when tracing is on
(tracing.py decides): the SDK's tracer provider exporting over OTLP/HTTP in
batches (a thread of the SDK's posts them; the event loop only queues), the
asyncpg and redis instrumentations (a span per SQL statement and per Redis
call), and the traced variants of the request wrapper and the cache lookup.

A request's span is the child of the gateway's `traceparent`; its trace id
goes into the write log next to the request id and, when sampled, onto the
latency histogram's bucket as an exemplar."""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
)

from .errors import error_response
from .metrics import Metrics
from .observe import log_write

log = logging.getLogger("runway.tracing")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The context of a request the sampler dropped: instrumentation suppressed, so
# its SQL statements and Redis calls start no span at all (not even a
# non-recording one: 20-40% of a cold read's instructions under callgrind).
_SUPPRESSED = otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, otel_context.Context())
_provider: TracerProvider | None = None


def setup(service: str) -> trace.Tracer:
    """The process's tracer provider (service.name runway-<service> unless
    OTEL_SERVICE_NAME says otherwise; sampler, exporter endpoint, headers and
    batch sizes from the standard OTEL_* variables) and the instrumentations."""
    global _provider
    name = os.environ.get("OTEL_SERVICE_NAME") or f"runway-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    _provider = provider
    atexit.register(shutdown)  # flush what is queued when the process ends
    log.warning(
        "tracing on: OTLP/HTTP to %s, sampler %s %s",
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        os.environ.get("OTEL_TRACES_SAMPLER_ARG", ""),
    )
    return provider.get_tracer("runway")


def shutdown() -> None:
    if _provider is not None:
        _provider.shutdown()


def _parent(headers: Any) -> tuple[int, int, bool] | None:
    """The `traceparent` the gateway forwards (a valid version-00 header: the
    gateway replaces any other), as (trace id, parent span id, sampled); None
    without one (a request that did not come through the gateway). Slicing,
    not the propagator's regex and tracestate parsing: 7 us fewer per request."""
    value = headers.get("traceparent")
    if value is None or len(value) < 55 or value[2] != "-":
        return None
    try:
        return int(value[3:35], 16), int(value[36:52], 16), value[53:55] != "00"
    except ValueError:
        return None


def traced(
    handler: Handler, metrics: Metrics, route: str, method: str | None, tracer: trace.Tracer
) -> Handler:
    """observe.observed's wrapper with a SERVER span around the handler.

    The sampler decides first (the provider's, from OTEL_TRACES_SAMPLER). A
    request it drops gets no span at all, and instrumentation is suppressed
    for it, so the SQL statements and Redis calls under it make none either.
    Through the SDK's start_as_current_span with attributes, an unsampled
    request cost about 20 us more (docs/decisions/0033-tracing.md)."""
    latency = metrics.requests
    series: dict[tuple[str, int], list[float]] = {}
    assert _provider is not None
    sampler = _provider.sampler
    # The plain ratio sampler's decision is one comparison on the trace id's
    # low 64 bits (the SDK's own rule); any other sampler is asked.
    ratio_bound = sampler.bound if isinstance(sampler, TraceIdRatioBased) else None
    server = SpanKind.SERVER

    async def traced_handler(request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        request_method = method or request.method
        name = f"{request_method} {route}"
        parent = _parent(request.headers)
        if parent is None:  # not through the gateway: the SDK starts the trace
            parent_context, recorded = None, True
        else:
            trace_id, span_id, sampled = parent
            if ratio_bound is not None:
                recorded = trace_id & 0xFFFFFFFFFFFFFFFF < ratio_bound
            else:
                recorded = None
            if recorded is not False:  # the SDK's span needs the parent as a context
                flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
                remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
                parent_context = trace.set_span_in_context(NonRecordingSpan(remote))
            if recorded is None:
                decision = sampler.should_sample(parent_context, trace_id, name, server)
                recorded = decision.decision.is_sampled()
        metrics.in_flight_count += 1
        if recorded:
            with tracer.start_as_current_span(
                name,
                context=parent_context,
                kind=server,
                attributes={
                    "http.request.method": request_method,
                    "http.route": route,
                    "url.path": request.path,
                    "runway.request_id": request.headers.get("X-Request-Id", "-"),
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    response = await handler(request)
                except Exception as exc:  # every failure leaves as JSON, never a traceback
                    response = error_response(request, exc)
                    span.record_exception(exc)
                finally:
                    metrics.in_flight_count -= 1
                status = response.status
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
            own = span.get_span_context()
            trace_id, sampled = own.trace_id, own.trace_flags.sampled
        else:
            # Dropped: the SQL and Redis instrumentations and cached_json's
            # lookup span are suppressed for the request (one prebuilt context).
            token = otel_context.attach(_SUPPRESSED)
            try:
                response = await handler(request)
            except Exception as exc:  # every failure leaves as JSON, never a traceback
                response = error_response(request, exc)
            finally:
                metrics.in_flight_count -= 1
                otel_context.detach(token)
            status = response.status
            sampled = False
        elapsed = time.perf_counter() - start
        key = (request_method, status)
        acc = series.get(key)
        if acc is None:
            acc = series[key] = latency.series(route, request_method, str(status))
        if sampled:
            latency.add_traced(acc, elapsed, format(trace_id, "032x"), time.time())
        else:
            latency.add(acc, elapsed)
        if request_method != "GET" or status >= 500:
            log_write(request, request_method, status, elapsed, format(trace_id, "032x"))
        return response

    return traced_handler


async def traced_lookup(
    tracer: trace.Tracer, cache: Any, scope: str, key: str, load: Callable[[], Awaitable[bytes]]
) -> tuple[bytes, str]:
    """The cache lookup in a span naming the tier that answered (local, redis,
    shared: another request's load, db). The load's SQL statements and the
    Redis calls are its children. Under an unsampled request (a
    non-recording current span), no span: the lookup alone."""
    if get_value(_SUPPRESS_INSTRUMENTATION_KEY) or not trace.get_current_span().is_recording():
        return await cache.lookup(scope, key, load)
    with tracer.start_as_current_span(
        "cache.lookup", attributes={"runway.cache.scope": scope, "runway.cache.key": key}
    ) as span:
        body, source = await cache.lookup(scope, key, load)
        span.set_attribute("runway.cache.source", source)
        return body, source
