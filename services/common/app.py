"""The factory every service's `create_app(settings)` starts from (`base_app`),
the `Routes` it adds its routes through, the operational views (/healthz,
/readyz, /metrics) and the process entry point (`run`). The resources the app
holds are set up in resources.py, the handler wrapper is observe.py."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from pathlib import Path

import orjson
from aiohttp import web

from . import tracing
from .db import SchemaNotReady
from .logs import configure_logging
from .metrics import EXPOSITION_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE, Metrics
from .observe import Handler, observed
from .resources import (
    CACHE,
    DB,
    METRICS,
    SETTINGS,
    cache_ctx,
    database_ctx,
    gc_pause_ctx,
    loop_lag_ctx,
    outbox_ctx,
    redis_ctx,
    replicas_ctx,
)
from .responses import json_response
from .settings import Settings

log = logging.getLogger("runway.app")

MAX_BODY_BYTES = 1024 * 1024  # the contract's 413 limit


class Routes:
    """Adds a service's routes, each handler wrapped by `observe.observed` (latency
    metrics, JSON errors). The app has no middleware: aiohttp would then run a
    chain of its own on every request, a fifth of a cached read's CPU."""

    def __init__(self, app: web.Application) -> None:
        self._router = app.router
        self._metrics = app[METRICS]

    def get(self, path: str, handler: Handler, *, allow_head: bool = False) -> None:
        self._add("GET", path, handler)
        if allow_head:
            self._add("HEAD", path, handler)

    def post(self, path: str, handler: Handler) -> None:
        self._add("POST", path, handler)

    def put(self, path: str, handler: Handler) -> None:
        self._add("PUT", path, handler)

    def _add(self, method: str, path: str, handler: Handler) -> None:
        self._router.add_route(method, path, observed(handler, self._metrics, path, method))


def base_app(
    settings: Settings,
    *,
    cache_namespace: str,
    migrations_dir: Path | None = None,
    outbox: bool = False,
) -> tuple[web.Application, Routes]:
    """An application with the shared resources, the operational routes and the
    JSON 404/405 for every path no route takes. The service adds its own routes
    through the returned `Routes`. `outbox`: the service writes, and its
    schema has cache_outbox (services/common/outbox.py)."""
    # Before any route is wrapped: observe.observed picks the traced wrapper
    # when OTEL_EXPORTER_OTLP_ENDPOINT is set (tracing.py).
    tracing.configure(settings.service)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[METRICS] = Metrics(settings.service)
    app.cleanup_ctx.append(database_ctx(migrations_dir))
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(cache_ctx(cache_namespace))
    app.cleanup_ctx.append(replicas_ctx)
    if outbox:
        app.cleanup_ctx.append(outbox_ctx)
    app.cleanup_ctx.append(gc_pause_ctx)
    app.cleanup_ctx.append(loop_lag_ctx)
    routes = Routes(app)
    routes.get("/healthz", healthz, allow_head=True)
    routes.get("/readyz", readyz, allow_head=True)
    routes.get("/metrics", metrics_view, allow_head=True)
    # Indexed under "/", which aiohttp's resolver tries after every longer
    # prefix: only a path that no route takes (in any method) ends here.
    app.router.add_route("*", "/{path:.*}", observed(no_route, app[METRICS], "unmatched", None))
    return app, routes


async def no_route(request: web.Request) -> web.Response:
    """404, or 405 when another method has a route for this path (errors.py
    words both and adds `Allow`)."""
    allowed: set[str] = set()
    this = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not this:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


async def healthz(request: web.Request) -> web.Response:
    """The process is alive; no dependency is asked."""
    return json_response(b'{"status":"ok"}')


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers; the cache's state (and the read
    replicas', when there are any) is reported, not required."""
    app = request.app
    cache_state = app[CACHE].state()
    try:
        async with asyncio.timeout(1.0):
            await app[DB].fetchval("SELECT 1")
        database = "up"
    except Exception as exc:  # any failure means not ready
        log.warning("readiness: database check failed: %r", exc)
        database = "down"
    status = 200 if database == "up" else 503
    body = {
        "status": "ready" if status == 200 else "unavailable",
        "database": database,
        "cache": cache_state,
    }
    replicas = app[DB].replicas
    if replicas is not None:
        body["replicas"] = replicas.state()
    return json_response(orjson.dumps(body), status=status)


async def metrics_view(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    if tracing.TRACER is not None and "openmetrics" in request.headers.get("Accept", ""):
        # The latency histograms' exemplars (trace ids) exist only in OpenMetrics.
        body = metrics.openmetrics_exposition()
        return web.Response(body=body, headers={"Content-Type": OPENMETRICS_CONTENT_TYPE})
    body = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": EXPOSITION_CONTENT_TYPE})


async def _freeze_startup_objects(app: web.Application) -> None:
    """Move everything alive once the process is up (modules, the app, pools:
    most of its tracked objects) out of the collector's sight. A full
    collection walks every tracked object while the loop stands still; the
    benchmark measured these pauses at 34-38 ms each under load before."""
    gc.collect()
    gc.freeze()
    app[METRICS].gc_frozen.set(gc.get_freeze_count())


def run(create_app: Callable[[Settings], web.Application], service: str) -> None:
    """Process entry point: uvloop, settings from the environment, no access log
    unless ACCESS_LOG=1 (it costs more than a cached response)."""
    import uvloop

    settings = Settings.from_env(service)
    configure_logging(settings.service, settings.log_level)
    access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
    app = create_app(settings)
    app.on_startup.append(_freeze_startup_objects)  # after every cleanup_ctx has started
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            access_log=access_log,
            access_log_format='%a "%r" %s %b %Tf request_id=%{X-Request-Id}i',
            print=None,
            shutdown_timeout=10,
            loop=uvloop.new_event_loop(),
        )
    except SchemaNotReady as exc:  # the database is behind this build: no start
        log.error("not starting: %s", exc)
        raise SystemExit(f"runway-{service}: not starting: {exc}") from None
