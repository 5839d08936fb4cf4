"""What a service's app holds, each under a typed `web.AppKey`, and the
`cleanup_ctx` generators that open and close them: the Postgres pool (behind
Database), the cache's Redis client, the response cache, the writers'
invalidation outbox, the garbage-collector pause timer and the event-loop lag sampler. Nothing here
does I/O until the app starts."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from .cache import ResponseCache, close_bounded
from .db import Database, create_pool, require_schema
from .metrics import Metrics
from .outbox import Outbox
from .replicas import ReplicaRouter
from .settings import Settings

log = logging.getLogger("runway.app")

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
DB: web.AppKey[Database] = web.AppKey("db", Database)
# None when the cache is disabled (settings.cache_enabled): the cache then
# keeps to its process-local tier.
REDIS: web.AppKey[Redis | None] = web.AppKey("redis")
CACHE: web.AppKey[ResponseCache] = web.AppKey("cache", ResponseCache)
# The services that write (reviews, qa): their writes' invalidation and the relay.
OUTBOX: web.AppKey[Outbox] = web.AppKey("outbox", Outbox)

POOL_CLOSE_TIMEOUT_S = 5.0

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def database_ctx(migrations_dir: Path | None) -> CleanupCtx:
    """The pool under DB, once the schema is found up to date (when the service
    has migrations). No DDL here: `make migrate` (services/common/migrate.py)
    applies them; an older schema raises db.SchemaNotReady and the process
    does not start."""

    async def database(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        pool = await create_pool(settings)
        if migrations_dir is not None:
            await require_schema(pool, settings, migrations_dir)
        metrics = app[METRICS]
        db = Database(pool, metrics, settings.db_acquire_timeout_s)
        metrics.pool_size.set_function(pool.get_size)
        metrics.pool_idle.set_function(db.idle_size)
        metrics.pool_max.set_function(pool.get_max_size)
        app[DB] = db
        yield
        await db.release_idle()
        try:
            # close() waits for every connection to come back; one that never
            # does (a stuck query) must not hold up the shutdown. Cancelled,
            # close() terminates the pool's connections.
            await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("database pool not closed in %.0f s: terminated", POOL_CLOSE_TIMEOUT_S)

    return database


def redis_client(settings: Settings) -> Redis:
    """The cache's client: `cache_redis_client` for the settings' URL and mode."""
    return cache_redis_client(
        settings.redis_url, settings.redis_timeout_ms, cluster=settings.redis_cluster
    )


def cache_redis_client(url: str, timeout_ms: int, *, cluster: bool = False) -> Redis:
    """A client for the cache. Its calls are bounded in milliseconds by the
    cache's own lag-tolerant deadlines, so the client has no socket timeout of
    its own: with one, redis-py wraps every send in asyncio.wait_for (a new
    Task per command) and every read in a second timer, and a wall-clock
    timeout would also fire whenever this process's loop stalls (redis-py
    then drops the connection). The pub/sub reader, which blocks by design,
    gets a client of its own. `cluster`: `url` is a seed node of a Redis
    Cluster (redis-py's cluster client; the cache splits its commands per slot,
    services/common/cache/cluster.py)."""
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(  # type: ignore[return-value]
            url,
            socket_timeout=None,
            socket_connect_timeout=max(timeout_ms / 1000, 0.05),
            health_check_interval=0,
            max_connections=64,
            # One immediate retry (after a MOVED or a node lost, with the slot
            # map refreshed), no backoff: the cache's deadlines bound every call.
            retry=Retry(NoBackoff(), 1),
        )
    return Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=max(timeout_ms / 1000, 0.05),
        health_check_interval=0,
        max_connections=64,
        # One immediate retry on a broken connection (a pooled socket to a Redis
        # that restarted); none on a timeout, and no backoff: calls stay bounded.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The cache's Redis client under REDIS (it connects on first use)."""
    settings = app[SETTINGS]
    redis = redis_client(settings) if settings.cache_enabled else None
    app[REDIS] = redis
    yield
    if redis is not None:
        # Bounded, errors ignored: a dead Redis must not fail or hold up a shutdown.
        await close_bounded(redis.aclose(), None)


def cache_ctx(namespace: str) -> CleanupCtx:
    """The response cache under CACHE, on REDIS (so after redis_ctx: stopped
    before that client closes)."""

    async def cache(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        response_cache = ResponseCache(
            app[REDIS],
            namespace,
            app[METRICS],
            ttl_s=settings.cache_ttl_s,
            local_max_bytes=settings.cache_local_max_bytes,
            timeout_s=settings.redis_timeout_ms / 1000,
            pubsub_factory=None if settings.redis_cluster else lambda: redis_client(settings),
            cluster=settings.redis_cluster,
            admit_on_second_access=settings.cache_admit_on_second,
        )
        app[CACHE] = response_cache
        await response_cache.start()
        yield
        await response_cache.stop()

    return cache


async def replicas_ctx(app: web.Application) -> AsyncIterator[None]:
    """With <SERVICE>_REPLICA_URLS: a ReplicaRouter attached to DB and CACHE
    and its monitor (services/common/replicas.py); after cache_ctx, so stopped
    before the cache. Without replicas: nothing at all. Nor with the cache
    disabled: replicas serve reads only under the cache's lease, which a
    process without Redis never holds, so every read would go to the primary."""
    settings = app[SETTINGS]
    if not settings.replica_urls:
        yield
        return
    if not settings.cache_enabled:
        log.warning("replicas configured but CACHE_ENABLED=0: every read goes to the primary")
        yield
        return
    database = app[DB]
    router = ReplicaRouter(
        database,
        settings.database_url,
        settings.replica_urls,
        app[METRICS],
        service=settings.service,
        max_lag_s=settings.replica_max_lag_ms / 1000,
        statement_timeout_ms=settings.statement_timeout_ms,
        connect_timeout_s=settings.db_connect_timeout_s,
        pool_max=settings.pool_max,
    )
    await router.start()
    app[CACHE].attach_replicas(router)
    database.attach_replicas(router)
    yield
    database.attach_replicas(None)
    await router.stop()


async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
    """The invalidation outbox under OUTBOX and its relay (services/common/
    outbox.py); after cache_ctx and replicas_ctx, so stopped before them."""
    outbox = Outbox(app[DB], app[CACHE], app[METRICS])
    app[OUTBOX] = outbox
    relay = asyncio.create_task(outbox.run(), name="outbox-relay")
    yield
    relay.cancel()
    with suppress(asyncio.CancelledError):
        await relay
    await outbox.close()


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


LOOP_LAG_INTERVAL_S = 0.01
# This thread's scheduler statistics: time on a CPU, time waiting on a run
# queue (runnable, every CPU busy with something else), in ns (Linux).
SCHEDSTAT = "/proc/thread-self/schedstat"


def open_schedstat() -> int | None:
    """A descriptor to pread SCHEDSTAT from (a few microseconds a read), or
    None where the kernel has none."""
    try:
        fd = os.open(SCHEDSTAT, os.O_RDONLY)
        runqueue_wait_ns(fd)
    except (OSError, ValueError, IndexError):
        return None
    return fd


def runqueue_wait_ns(fd: int) -> int:
    return int(os.pread(fd, 96, 0).split()[1])


async def loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    """Samples event-loop lag into runway_event_loop_lag_seconds while the app
    runs: a timer due every LOOP_LAG_INTERVAL_S records how late it ran. Whatever
    held the loop (a long callback, a GC pause, a batch of fills) shows as
    lateness, and every request in flight waited as long. One callback per
    10 ms (a few microseconds: well under 0.1% of a core); the next tick is
    due one interval after this one ran, so a stall is counted once, not as
    a burst of overdue ticks.

    A tick is also late when the process was ready but every CPU was busy
    elsewhere (on two cores, with Postgres, NGINX and the load generator,
    often). runway_event_loop_lag_net_seconds takes that out: each tick's
    lateness less the time this thread waited on a run queue since the last
    tick (the kernel's schedstat), at least 0. What stays is a lower bound of
    the loop's own stall: its callbacks, collections and batches."""
    loop = asyncio.get_running_loop()
    histogram = app[METRICS].loop_lag
    series = histogram.series()
    add = histogram.add
    net_series = app[METRICS].loop_lag_net.series()
    schedstat = open_schedstat()
    waited = runqueue_wait_ns(schedstat) if schedstat is not None else 0
    handle: asyncio.TimerHandle | None = None

    def tick(due: float) -> None:
        nonlocal handle, waited
        now = loop.time()
        late = max(0.0, now - due)
        add(series, late)
        if schedstat is not None:
            total = runqueue_wait_ns(schedstat)
            add(net_series, max(0.0, late - (total - waited) / 1e9))
            waited = total
        handle = loop.call_at(now + LOOP_LAG_INTERVAL_S, tick, now + LOOP_LAG_INTERVAL_S)

    due = loop.time() + LOOP_LAG_INTERVAL_S
    handle = loop.call_at(due, tick, due)
    try:
        yield
    finally:
        handle.cancel()
        if schedstat is not None:
            os.close(schedstat)
