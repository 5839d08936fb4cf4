"""The pieces every service's `create_app(settings)` is assembled from: typed
app keys, the pool / Redis / cache `cleanup_ctx` generators, the operational
routes (/healthz, /readyz, /metrics) and the process entry point."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from .cache import ResponseCache, close_bounded
from .db import Database, create_pool, prepare_database
from .errors import JSON_HEADERS
from .logs import configure_logging
from .metrics import METRICS, Handler, Metrics, gc_pause_ctx, metrics_view, observed
from .settings import Settings

log = logging.getLogger("runway.app")

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
DB: web.AppKey[Database] = web.AppKey("db", Database)
CACHE: web.AppKey[ResponseCache] = web.AppKey("cache", ResponseCache)

MAX_BODY_BYTES = 1024 * 1024  # the contract's 413 limit
POOL_CLOSE_TIMEOUT_S = 5.0


class Routes:
    """Adds a service's routes, each handler wrapped by `metrics.observed` (latency
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
    settings: Settings, *, cache_namespace: str, migrations_dir: Path | None = None
) -> tuple[web.Application, Routes]:
    """An application with the shared resources, the operational routes and the
    JSON 404/405 for every path no route takes. The service adds its own routes
    through the returned `Routes`."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[METRICS] = Metrics(settings.service)
    app.cleanup_ctx.append(_database_ctx(migrations_dir))
    app.cleanup_ctx.append(_cache_ctx(cache_namespace))
    app.cleanup_ctx.append(gc_pause_ctx)
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


def _database_ctx(
    migrations_dir: Path | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def database(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if migrations_dir is not None:
            await prepare_database(settings.database_url, migrations_dir)
        pool = await create_pool(settings)
        metrics = app[METRICS]
        metrics.pool_size.set_function(pool.get_size)
        metrics.pool_idle.set_function(pool.get_idle_size)
        metrics.pool_max.set_function(pool.get_max_size)
        app[DB] = Database(pool, metrics, settings.db_acquire_timeout_s)
        yield
        try:
            # close() waits for every connection to come back; one that never
            # does (a stuck query) must not hold up the shutdown. Cancelled,
            # close() terminates the pool's connections.
            await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("database pool not closed in %.0f s: terminated", POOL_CLOSE_TIMEOUT_S)

    return database


def redis_client(settings: Settings) -> Redis:
    """A client for the cache. Its calls are bounded in milliseconds by the
    cache's own lag-tolerant deadlines, so the client has no socket timeout of
    its own: with one, redis-py wraps every send in asyncio.wait_for (a new
    Task per command) and every read in a second timer, and a wall-clock
    timeout would also fire whenever this process's loop stalls (redis-py
    then drops the connection). The pub/sub reader, which blocks by design,
    gets a client of its own."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=None,
        socket_connect_timeout=max(settings.redis_timeout_ms / 1000, 0.05),
        health_check_interval=0,
        max_connections=64,
        # One immediate retry on a broken connection (a pooled socket to a Redis
        # that restarted); none on a timeout, and no backoff: calls stay bounded.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


def _cache_ctx(namespace: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def cache(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        redis = redis_client(settings) if settings.cache_enabled else None
        response_cache = ResponseCache(
            redis,
            namespace,
            app[METRICS],
            ttl_s=settings.cache_ttl_s,
            local_max_bytes=settings.cache_local_max_bytes,
            timeout_s=settings.redis_timeout_ms / 1000,
            pubsub_factory=lambda: redis_client(settings),
        )
        app[CACHE] = response_cache
        await response_cache.start()
        yield
        await response_cache.stop()
        if redis is not None:
            # Bounded, errors ignored: a dead Redis must not fail or hold up a shutdown.
            await close_bounded(redis.aclose(), None)

    return cache


def json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers=JSON_HEADERS)


# Prebuilt per source: X-Cache tells the gateway's access log where a body came from.
_CACHED_HEADERS = {
    source: {**JSON_HEADERS, "X-Cache": source} for source in ("local", "redis", "db", "shared")
}
# The same answer's head as aiohttp writes it, up to its Content-Length value:
# status line, then these headers in this order, then Content-Length, Date and
# Server (web.Response's order; tests/common/test_app.py compares the two).
_READY_HEADS = {
    source: b"HTTP/1.1 200 OK\r\n"
    + b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items())
    + b"Content-Length: "
    for source, headers in _CACHED_HEADERS.items()
}
_SERVER = SERVER_SOFTWARE.encode()
_date = ["", b""]  # aiohttp's Date string of this second, and its bytes


def _ready_bytes(source: str, body: bytes) -> bytes:
    date = rfc822_formatted_time()  # the same object all second long
    if date is not _date[0]:
        _date[:] = date, date.encode()
    return b"%s%d\r\nDate: %s\r\nServer: %s\r\n\r\n%s" % (
        _READY_HEADS[source],
        len(body),
        _date[1],
        _SERVER,
        body,
    )


class ReadyResponse(web.StreamResponse):
    """A 200 whose status line, headers and body are one buffer, written as it
    is. web.Response builds a header multidict, fills in the defaults and
    serialises them on every request: about a sixth of a cached read's CPU in
    the service (bench/README.md, "Changes"). Only for a request that path
    would answer with exactly these headers: a GET on a persistent HTTP/1.1
    connection (no Connection header then), in an app with no
    on_response_prepare handler (none of ours has one)."""

    __slots__ = ("_ready",)

    def __init__(self, ready: bytes) -> None:
        super().__init__()
        self._ready = ready

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._payload_writer is None and not self._eof_sent:
            self._req = request
            self._payload_writer = request._payload_writer
            self._keep_alive = True
        return self._payload_writer

    async def write_eof(self, data: bytes = b"") -> None:
        writer = self._payload_writer
        if self._eof_sent or writer is None:
            return
        await writer.write_eof(self._ready)
        self._eof_sent = True
        self._req = None
        self._body_length = writer.output_size
        self._payload_writer = None


async def cached_json(
    request: web.Request, scope: str, key: str, load: Callable[[], Awaitable[bytes]]
) -> web.StreamResponse:
    """A 200 JSON response read through the service's cache."""
    body, source = await request.app[CACHE].lookup(scope, key, load)
    if request.version == HttpVersion11 and request.keep_alive and request.method == "GET":
        return ReadyResponse(_ready_bytes(source, body))
    return web.Response(body=body, headers=_CACHED_HEADERS[source])


async def healthz(request: web.Request) -> web.Response:
    """The process is alive; no dependency is asked."""
    return json_response(b'{"status":"ok"}')


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers; the cache's state is reported, not required."""
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
    return json_response(orjson.dumps(body), status=status)


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
