"""What the cache's mechanism tests share (tests/common/test_cache_*.py): a
counting stand-in for the database behind a loader, caches made as the
services make them (on one Redis or a Redis Cluster), and the cache's
counters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from services.common.cache import (
    Loader,
    ResponseCache,
)
from services.common.metrics import Metrics
from services.common.resources import cache_redis_client


class FakeDatabase:
    """Stands in for Postgres in these mechanism tests: a value and a read counter.
    (The service-level tests use the real Postgres.)"""

    def __init__(self) -> None:
        self.value = b"v1"
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self._read = asyncio.Event()  # set (and replaced) at every read

    async def load(self) -> bytes:
        self.reads += 1
        self._read.set()
        self._read = asyncio.Event()
        value = self.value
        if self.gate is not None:
            await self.gate.wait()  # hold the old value while a write happens
        return value

    async def reads_reach(self, n: int, timeout_s: float = 1.0) -> None:
        """Wait until `n` loads have begun, or `timeout_s`: the asserts after
        it decide (a cache that joined a load it must not stays below `n`)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.reads < n:
                    await self._read.wait()


def returns(body: bytes) -> Loader:
    async def load() -> bytes:
        return body

    return load


def make_cache(url: str, namespace: str = "t", *, cluster: bool = False, **kwargs) -> ResponseCache:
    # No socket timeout, as in the services (app.redis_client): the cache's own
    # deadlines must bound every call, stalled Redis included. Every miss is
    # cached, so each test's first read exercises the tiers; admission on
    # second access has tests of its own (test_admission.py).
    kwargs.setdefault("admit_on_second_access", False)
    if cluster:  # the services' own client (resources.cache_redis_client)
        return ResponseCache(
            cache_redis_client(url, 50, cluster=True),
            namespace,
            Metrics("test"),
            timeout_s=0.05,
            cluster=True,
            **kwargs,
        )
    return ResponseCache(
        Redis.from_url(url, socket_timeout=None, socket_connect_timeout=0.05),
        namespace,
        Metrics("test"),
        timeout_s=0.05,
        pubsub_factory=lambda: Redis.from_url(url, socket_timeout=None),
        **kwargs,
    )


@contextlib.asynccontextmanager
async def started_cache(url: str, **kwargs) -> AsyncIterator[ResponseCache]:
    """make_cache(url, **kwargs), started and ready; stopped on the way out."""
    c = make_cache(url, **kwargs)
    await c.start()
    assert await c.wait_ready()
    try:
        yield c
    finally:
        await c.stop()


def counter(cache: ResponseCache, tier: str, result: str) -> float:
    return cache._metrics.cache.labels(tier, result).value
