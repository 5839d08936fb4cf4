"""The wrapper every route's handler runs in: it records the request's latency,
turns every failure into the contract's JSON error (errors.py) and logs writes
and server errors with the gateway's request id."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import tracing
from .errors import error_response
from .logs import InfoLines
from .metrics import Metrics

write_lines = InfoLines(logging.getLogger("runway.requests"))


def log_write(
    request: web.Request, method: str, status: int, elapsed: float, trace_id: str
) -> None:
    """One line per write or server error, with the gateway's request id and
    the trace id (reads are not logged: at thousands per second the log would
    cost more than the answer)."""
    write_lines.info(
        f"{method} {request.path_qs} {status} {elapsed * 1000:.1f}ms "
        f"request_id={request.headers.get('X-Request-Id', '-')} trace_id={trace_id}"
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def observed(handler: Handler, metrics: Metrics, route: str, method: str | None) -> Handler:
    """`handler` wrapped in what every request needs: its latency recorded under
    its route template, method and status, and every failure turned into the
    contract's JSON error, never a traceback. `method` None: the request's own.

    Wrapped once per route at registration instead of a middleware: with any
    middleware at all, aiohttp builds a handler chain and adds one of its own
    on every request, which cost 8 of 40 us in a cached read
    (docs/decisions/0006-handlers-wrapped-at-registration.md).

    With tracing on (tracing.py), otel.py's variant instead, chosen here once:
    the untraced path below stays exactly what it was."""
    if tracing.TRACER is not None:
        from .otel import traced

        return traced(handler, metrics, route, method, tracing.TRACER)
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
            log_write(request, request_method, status, elapsed, tracing.trace_id(request.headers))
        return response

    return observed_handler
