"""Fail-open bounds on every Redis call the cache makes.

Invariant: no Redis call waits past its deadline, and a deadline expires only
when Redis was late, not when this process's own loop was (LagTolerantTimeout);
a Redis failure opens the breaker, so reads go straight to Postgres for a
while; this process's own connection limit (MaxConnectionsError) is never taken
for a Redis failure; closing a connection never hangs (close_bounded). What a
failure means for coherence (a writer waits out the lease) is coherence.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import MaxConnectionsError, RedisClusterException, RedisError

from ..metrics import Metrics

log = logging.getLogger("runway.cache")

T = TypeVar("T")

BREAKER_S = 1.0  # after a Redis error, skip Redis this long (the pinger may close it sooner)
# Bound on closing a pub/sub connection: redis-py's aclose() can wait forever
# in StreamWriter.wait_closed() (redis/redis-py#3941), which held up a test's
# app shutdown until pytest-timeout killed it.
CLOSE_TIMEOUT_S = 1.0
POOL_WAIT_S = 0.001  # between tries for a connection when this process's pool is exhausted

# RuntimeError: under uvloop, a call that reconnects to a Redis that just went
# away can raise "unable to perform operation on <TCPTransport closed=True>".
# RedisClusterException (no RedisError: slots not covered, keys across slots,
# no node answering) and IndexError/KeyError (redis-py's cluster client when its
# slot map is being rebuilt during a failover) are Redis failures too: a write
# that committed must never answer 500 for the cache's sake.
_REDIS_FAILURES = (
    RedisError,
    RedisClusterException,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,
    IndexError,
    KeyError,
)


async def when_a_connection_frees(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, tried again while this process's Redis connection pool is
    exhausted (within the caller's deadline). MaxConnectionsError is this
    process's own limit, not a Redis failure: taken for an outage, it would
    let a writer reply before the other processes heard of its write.
    (redis-py's blocking pool waits too, but costs 15-20 us more per call.)"""
    while True:
        try:
            return await call()
        except MaxConnectionsError:
            await asyncio.sleep(POOL_WAIT_S)


class LagTolerantTimeout:
    """`asyncio.timeout(seconds)` that does not blame Redis for this process's
    own lag. When the event loop is stalled (CPU saturation, a long callback)
    the deadline's timer runs late, possibly before the loop has read a reply
    that arrived in time, and a 50 ms deadline would then trip the breaker of a
    healthy Redis. A timer that runs more than half its span late re-arms for
    one more span instead (at most `extensions` times); on time, it expires."""

    __slots__ = ("_extensions", "_handle", "_loop", "_seconds", "_timeout")

    def __init__(self, seconds: float, extensions: int = 2) -> None:
        self._seconds = seconds
        self._extensions = extensions

    async def __aenter__(self) -> LagTolerantTimeout:
        self._loop = asyncio.get_running_loop()
        self._timeout = asyncio.timeout(None)
        await self._timeout.__aenter__()
        self._arm(self._loop.time() + self._seconds)
        return self

    def _arm(self, due: float) -> None:
        self._handle = self._loop.call_at(due, self._check, due)

    def _check(self, due: float) -> None:
        now = self._loop.time()
        if now - due > self._seconds / 2 and self._extensions > 0:
            self._extensions -= 1
            self._arm(now + self._seconds)
        else:
            self._timeout.reschedule(now)  # expire: TimeoutError leaves the block

    async def __aexit__(self, *exc_info: object) -> bool | None:
        self._handle.cancel()
        return await self._timeout.__aexit__(*exc_info)  # type: ignore[arg-type]


async def close_bounded(closing: Awaitable[object], connection: object | None) -> None:
    """Await a redis-py close for at most CLOSE_TIMEOUT_S, ignoring its errors.
    On a timeout, drop `connection`'s socket without waiting (nowait), so a
    hung close leaks nothing."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await closing
    except TimeoutError:
        log.warning("redis close took over %.0f s (redis-py#3941): socket dropped", CLOSE_TIMEOUT_S)
        disconnect = getattr(connection, "disconnect", None)
        if disconnect is not None:
            with contextlib.suppress(Exception):
                await disconnect(nowait=True)
    except Exception:  # a connection already broken: nothing left to close
        pass


class Breaker:
    """The circuit breaker over Redis. `trip()` on a Redis failure keeps reads
    off Redis for BREAKER_S; `recovered()`, when a ping gets through again,
    keeps them off a little longer (the grace: writers of the outage replay
    their deletes first). Writes do not consult it (coherence.py)."""

    __slots__ = ("_metrics", "down_since", "down_until")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.down_until = 0.0  # reads skip Redis until then
        self.down_since: float | None = None  # None: Redis is up

    def closed(self) -> bool:
        """Whether reads may ask Redis now."""
        return time.monotonic() >= self.down_until

    def trip(self, exc: BaseException) -> None:
        """Redis failed a call: open (or keep open) for BREAKER_S."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning("redis unavailable, serving from postgres: %r", exc)
        self.down_until = now + BREAKER_S
        self._metrics.cache_error_redis.inc()

    def recovered(self, grace_s: float) -> None:
        """Redis answered a ping: close after `grace_s` if it was open."""
        if self.down_since is None:
            return
        log.info("redis answers again, caching resumes")
        self.down_since = None
        # Writes made during the outage could not delete their old answers
        # from Redis; each writer replays them on its first ping that gets
        # through (within a ping interval). Reads keep off Redis until then.
        self.down_until = time.monotonic() + grace_s
