"""The cache on a Redis that fails: killed or stalled, it fails open and
caching resumes by itself; a failed invalidation is replayed; deadlines,
breakers and pools bound every wait; on a cluster, a token write no replica
confirmed counts as failed."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from redis.asyncio import Redis

from services.common import cache as cache_module
from services.common.cache import (
    ResponseCache,
    facade,
    resilience,
)
from services.common.metrics import Metrics
from tests.common.cache_harness import (
    FakeDatabase,
    counter,
    make_cache,
    started_cache,
)


async def timed_get(c: ResponseCache, db: FakeDatabase, scope: str = "p:1") -> float:
    start = time.perf_counter()
    assert await c.get(scope, "k", db.load) == db.value
    return time.perf_counter() - start


@pytest.mark.parametrize("fault", ["killed", "stalled"])
async def test_fail_open_and_resume(private_redis, fault):
    a, b = make_cache(private_redis.url), make_cache(private_redis.url)
    for c in (a, b):
        await c.start()
        assert await c.wait_ready()
    db = FakeDatabase()
    try:
        await a.get("p:1", "k", db.load)
        await b.get("p:1", "k", db.load)
        if fault == "killed":
            private_redis.stop()
        else:
            private_redis.pause()
        # Reads keep working, each bounded in milliseconds, never an error.
        slowest = max([await timed_get(a, db, f"p:{i}") for i in range(20)])
        assert slowest < 0.25, slowest
        # A write during the outage: its reply waits out the lease, after which
        # no process serves the old value from its local tier.
        db.value = b"v2"
        start = time.perf_counter()
        await a.invalidate("p:1")
        assert time.perf_counter() - start < cache_module.LEASE_S + 0.2
        assert await b.get("p:1", "k", db.load) == b"v2"
        assert not b.local_live()
        if fault == "killed":
            private_redis.start()
        else:
            private_redis.resume()
        # Caching resumes by itself.
        assert await a.wait_ready(5) and await b.wait_ready(5)
        reads = db.reads
        await b.get("p:9", "k", db.load)
        await b.get("p:9", "k", db.load)
        assert db.reads == reads + 1
        assert b.state()["redis"] == "up"
    finally:
        if fault == "stalled" and private_redis.process is not None:
            private_redis.resume()
        for c in (a, b):
            await c.stop()


async def test_an_open_breaker_keeps_reads_off_a_stalled_redis(private_redis):
    """After a Redis call fails, reads skip Redis for BREAKER_S: against a
    stalled Redis only the first read waits out its deadline, not every one."""
    db = FakeDatabase()
    async with started_cache(private_redis.url) as c:
        try:
            private_redis.pause()
            await timed_get(c, db, "p:0")  # waits out its deadline: the breaker opens
            start = time.perf_counter()
            for i in range(1, 21):
                assert await c.get(f"p:{i}", "k", db.load) == b"v1"
            assert time.perf_counter() - start < 0.25  # 20 deadlines of 50 ms would take 1 s
        finally:
            private_redis.resume()


async def test_a_failed_invalidation_is_replayed_when_redis_answers(private_redis):
    """A write while Redis is stalled cannot delete its scope's old answer
    there: the writer keeps it and deletes it on its first ping that gets
    through, so the old answer does not stay in Redis until its TTL."""
    a = make_cache(private_redis.url)
    await a.start()
    assert await a.wait_ready()
    admin = Redis.from_url(private_redis.url)
    try:
        await a.get("p:81", "k", FakeDatabase().load)
        assert await a.drain()
        key = f"t:{a._coherence.gen}:p:81"
        assert await admin.hget(key, "k") == b"v1"
        private_redis.pause()
        await a.invalidate("p:81")  # fails: kept for replay
        private_redis.resume()
        assert await a.wait_ready(5)  # a ping got through (and replayed first)
        assert await admin.hget(key, "k") is None
    finally:
        if private_redis.process is not None:
            private_redis.resume()
        await admin.aclose()
        await a.stop()


async def test_redis_is_mostly_skipped_while_it_does_not_pay_off(caches):
    """A walk over far more keys than are cached: almost no local miss finds
    its answer in Redis, so most stop asking it (and the answers stay right)."""
    a, _ = caches
    db = FakeDatabase()
    for i in range(3000):
        assert await a.get(f"p:{i}", "k", db.load) == b"v1"
    asked = counter(a, "redis", "miss") + counter(a, "redis", "hit")
    assert db.reads == 3000
    assert 0 < asked < 3000 * 0.6


async def test_a_late_deadline_is_extended_not_expired():
    """A reply that arrives in time must not be lost because this process's own
    loop stalled past the deadline (plain asyncio.timeout loses it)."""
    loop = asyncio.get_running_loop()

    async def wait_through_a_stall(timeout_cm) -> int:
        reply = loop.create_future()
        async with timeout_cm:
            loop.call_later(0.01, reply.set_result, 1)  # the reply is due at 10 ms
            loop.call_soon(time.sleep, 0.15)  # the loop then stalls 150 ms
            return await reply

    assert await wait_through_a_stall(cache_module.LagTolerantTimeout(0.05)) == 1
    with pytest.raises(TimeoutError):
        await wait_through_a_stall(asyncio.timeout(0.05))


async def test_a_silent_peer_still_times_out_on_time():
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with cache_module.LagTolerantTimeout(0.05):
            await loop.create_future()  # never answers
    assert 0.045 <= loop.time() - started < 0.2


async def test_a_stalled_process_does_not_trip_the_breaker(caches):
    """CPU saturation stalls the loop mid-ping; Redis itself is fine."""
    cache = caches[0]
    loop = asyncio.get_running_loop()
    for _ in range(5):
        loop.call_soon(time.sleep, 0.2)  # runs while the ping waits for its reply
        assert await cache.ping()
    assert counter(cache, "redis", "error") == 0
    assert cache.redis_usable()


async def test_a_hung_close_is_bounded_and_drops_the_socket(monkeypatch):
    """redis-py's aclose() can wait forever (redis/redis-py#3941): the close is
    given up after CLOSE_TIMEOUT_S and the connection dropped without waiting."""
    monkeypatch.setattr(resilience, "CLOSE_TIMEOUT_S", 0.05)
    loop = asyncio.get_running_loop()
    dropped: list[bool] = []

    class Connection:
        async def disconnect(self, nowait: bool = False) -> None:
            dropped.append(nowait)

    started = loop.time()
    await cache_module.close_bounded(loop.create_future(), Connection())  # never closes
    assert loop.time() - started < 0.5
    assert dropped == [True]


async def test_stop_is_bounded_by_a_stuck_task(redis_server, monkeypatch):
    """Shutdown is never held up by the cache: a task that will not finish is
    cancelled after STOP_TIMEOUT_S."""
    monkeypatch.setattr(facade, "STOP_TIMEOUT_S", 0.2)
    cache = make_cache(redis_server.url)
    await cache.start()
    assert await cache.wait_ready()
    stuck = asyncio.get_running_loop().create_future()

    async def never_done() -> None:
        await asyncio.shield(stuck)  # shielded: the first cancel does not end it

    cache._redis_tier._spawn(never_done())
    started = time.monotonic()
    await cache.stop()
    assert time.monotonic() - started < 2
    stuck.cancel()


async def test_an_exhausted_connection_pool_is_waited_for_not_taken_for_an_outage(
    caches, redis_server
):
    """Every connection of the writer's pool is busy when it invalidates:
    redis-py then fails the call at once (MaxConnectionsError). The writer
    must wait for a connection and tell the other process, not take its own
    limit for a Redis outage (which replied before the others heard of the
    write, and opened the breaker)."""
    _, b = caches
    url = redis_server.url
    tight = Redis.from_url(url, max_connections=2)
    a = ResponseCache(
        tight,
        "t",
        Metrics("test"),
        timeout_s=0.05,
        pubsub_factory=lambda: Redis.from_url(url),
        admit_on_second_access=False,
    )
    await a.start()
    assert await a.wait_ready()
    try:
        db = FakeDatabase()
        assert await b.get("p:11", "k", db.load) == b"v1"
        # Both of a's connections are held for 100 ms (the lists never fill).
        holders = [
            asyncio.create_task(tight.blpop([f"runway-test-empty-{i}"], timeout=0.1))
            for i in range(2)
        ]
        # Not background work: lets the test's own BLPOPs take both connections.
        await asyncio.sleep(0.02)
        db.value = b"v2"
        # A read meanwhile goes to the database without opening the breaker.
        assert await a.lookup("p:12", "k", db.load) == (b"v2", "db")
        await a.invalidate("p:11")
        assert await asyncio.gather(*holders) == [None, None]
        # b applies the message when its listener reads it: wait for that
        # (without it, CI once read b's local copy first).
        assert await b.drain()
        assert await b.get("p:11", "k", db.load) == b"v2"
        assert a._metrics.cache_invalidations.labels("ok")._value.get() == 1
        assert a._metrics.cache_invalidations.labels("failed")._value.get() == 0
        assert counter(a, "redis", "error") == 0
        assert a.redis_usable()
    finally:
        await a.stop()
        await tight.aclose()


async def test_a_token_write_no_replica_confirmed_counts_as_failed(request):
    """On a cluster, a token write that no replica has acknowledged could be
    lost at a failover (the promoted replica would serve the old answer):
    the invalidation WAITs for one, and without it counts as failed (kept for
    replay; the writer waits out the lease), never as done."""
    cluster = request.getfixturevalue("redis_cluster")
    cluster.flushall()
    url = cluster.seed_url()
    a = make_cache(url, cluster=True)
    await a.start()
    assert await a.wait_ready()
    key = f"t:{a._coherence.gen}:p:500"
    topology = cluster.topology()
    primary = topology.primary_for(a._redis.keyslot(key))
    replica = cluster.processes[topology.replicas_of(primary)[0].port]
    try:
        await a.invalidate("p:500")  # replicated: the node's replica count is known
        assert a._metrics.cache_invalidations.labels("failed")._value.get() == 0
        a._coherence.tasks[1].cancel()  # no ping replays it meanwhile
        replica.send_signal(signal.SIGSTOP)
        start = time.perf_counter()
        await a.invalidate("p:500")
        assert a._metrics.cache_invalidations.labels("failed")._value.get() == 1
        assert "p:500" in a._coherence.pending
        assert time.perf_counter() - start >= cache_module.LEASE_S  # waited out the leases
    finally:
        replica.send_signal(signal.SIGCONT)
        await a.stop()
        await a._redis.aclose()
