"""The cache's requirements, each against a real Redis: read-your-writes across
processes, no stale fill, stampede protection, fail-open on a killed or stalled
Redis with caching resuming by itself, bounded memory and jittered TTLs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

import orjson
import pytest
from redis.asyncio import Redis

from services.common import cache as cache_module
from services.common.cache import (
    Loader,
    ResponseCache,
    facade,
    flush_namespace,
    local,
    redis_tier,
    resilience,
)
from services.common.metrics import Metrics
from services.common.resources import cache_redis_client
from tests.redis_cluster_fixture import redis_cluster  # noqa: F401


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


def make_like(cache: ResponseCache) -> ResponseCache:
    """Another process's cache on the same Redis (or cluster) as `cache`."""
    return make_cache(cache.test_url, cluster=cache._cluster)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`caches` runs on one Redis and on a cluster, except in tests that use
    the single Redis's own fixtures (they inspect, pause or stop that server):
    those run on it alone, rather than collecting a cluster case that skips."""
    if "caches" in metafunc.fixturenames:
        single = {"redis_server", "private_redis"} & set(metafunc.fixturenames)
        backends = ["redis"] if single else ["redis", "cluster"]
        metafunc.parametrize("caches", backends, indirect=True)


@pytest.fixture
async def caches(request):
    """Two caches on one namespace: two service processes as far as Redis can
    tell; on one Redis, then on a Redis Cluster of 3 primaries + 3 replicas."""
    cluster = request.param == "cluster"
    if cluster:
        redis_cluster = request.getfixturevalue("redis_cluster")
        redis_cluster.flushall()
        url = redis_cluster.seed_url()
    else:
        server = request.getfixturevalue("redis_server")
        server.flush()
        url = server.url
    made = [make_cache(url, cluster=cluster), make_cache(url, cluster=cluster)]
    for c in made:
        c.test_url = url
        await c.start()
        assert await c.wait_ready()
    yield made
    for c in made:
        await c.stop()
        await c._redis.aclose()


def delay_listener(cache: ResponseCache, seconds: float) -> None:
    """The process handles each pub/sub message `seconds` after it arrived (a
    busy loop), in order, without falling further behind (beacons come every
    50 ms). Called again, it changes the delay of the messages to come;
    `seconds=0` ends it once the queue has been handled."""
    coherence = cache._coherence
    state = getattr(coherence, "_test_delay", None)
    if state is not None:
        state["seconds"] = seconds
        return
    handle = type(coherence).handle_message.__get__(coherence)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    state = coherence._test_delay = {"seconds": seconds}

    async def worker() -> None:
        while True:
            due, message = await queue.get()
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the subject: a listener running late
            await handle(message)

    state["task"] = asyncio.ensure_future(worker())

    async def delayed(message: dict) -> None:
        queue.put_nowait((loop.time() + state["seconds"], message))

    coherence.handle_message = delayed


def counter(cache: ResponseCache, tier: str, result: str) -> float:
    return cache._metrics.cache.labels(tier, result).value


async def test_second_read_is_a_local_hit(caches):
    a, _ = caches
    db = FakeDatabase()
    assert await a.get("p:1", "k", db.load) == b"v1"
    assert await a.get("p:1", "k", db.load) == b"v1"
    assert db.reads == 1
    assert counter(a, "local", "hit") == 1
    assert counter(a, "redis", "miss") == 1


async def test_other_process_fills_from_redis_not_the_database(caches):
    a, b = caches
    db = FakeDatabase()
    await a.get("p:1", "k", db.load)
    assert await a.drain()  # a's Redis fill runs in the background
    assert await b.get("p:1", "k", db.load) == b"v1"
    assert db.reads == 1
    assert counter(b, "redis", "hit") == 1


async def test_the_writer_s_session_reads_its_write_in_any_process(caches):
    """The writer's session (its marker) sees the write at once in the other
    process too, whose listener is slow to apply the message (a busy loop):
    it skips that process's local tier and its loads under way. A read
    without the marker there may still show the old answer (the bound)."""
    a, b = caches
    db = FakeDatabase()
    for c in (a, b):
        delay_listener(c, 0.15)
    for round_ in range(6):
        assert await a.get("p:7", "k", db.load) == db.value
        assert await b.get("p:7", "k", db.load) == db.value
        writer, reader = (a, b) if round_ % 2 else (b, a)
        db.value = f"v{round_ + 2}".encode()
        await writer.invalidate("p:7")
        # Both processes, both tiers: the session's very next read shows the write.
        assert (await reader.lookup_after_write("p:7", "k", db.load))[0] == db.value
        assert await writer.get("p:7", "k", db.load) == db.value
        assert await reader.drain()


async def test_other_readers_see_a_write_within_the_lease(caches):
    """Without the marker a read in another process shows the write within
    LEASE_S of the invalidation, however late its listener runs (a renewed
    lease proves the message applied, lease.py)."""
    a, b = caches
    db = FakeDatabase()
    delay_listener(b, 1.0)  # far behind: b must stop using its local tier
    for round_ in range(3):
        await a.drain()
        assert await b.get("p:7", "k", db.load) == db.value
        db.value = f"v{round_ + 2}".encode()
        await a.invalidate("p:7")
        written = time.monotonic()
        while (await b.get("p:7", "k", db.load)) != db.value:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # the subject: polling until the write shows
        assert time.monotonic() - written <= cache_module.LEASE_S + 0.02
        delay_listener(b, 0)
        assert await b.drain()
        delay_listener(b, 1.0)


async def test_an_invalidation_loads_its_script_again_after_redis_lost_it(caches, redis_server):
    """A Redis restart empties its script cache: the writer's EVALSHA then
    fails with NOSCRIPT, and the invalidation must load the script again and
    still reach the other process, not count as a Redis failure."""
    a, b = caches
    db = FakeDatabase()
    await a.invalidate("p:9")  # the script is loaded and its sha remembered
    assert await b.get("p:10", "k", db.load) == b"v1"
    admin = Redis.from_url(redis_server.url)
    try:
        await admin.script_flush()
    finally:
        await admin.aclose()
    db.value = b"v2"
    await a.invalidate("p:10")
    assert await b.drain()
    assert await b.get("p:10", "k", db.load) == b"v2"
    assert a._metrics.cache_invalidations.labels("ok")._value.get() == 2
    assert a._metrics.cache_invalidations.labels("failed")._value.get() == 0
    assert counter(a, "redis", "error") == 0


async def test_concurrent_invalidations_go_out_in_groups(caches):
    """Twenty writes committing together: their invalidations share one Redis
    call (grouping.py), and when each returns, its scope's old answer is gone
    from Redis (the other process's marked read finds the new value) and, once
    the message is applied, from the other process's local tier."""
    a, b = caches
    db = {i: FakeDatabase() for i in range(20)}
    for i, d in db.items():
        assert await b.get(f"p:{i}", "k", d.load) == b"v1"
    assert await b.drain()  # b's fills are in Redis
    for d in db.values():
        d.value = b"v2"
    groups = a._coherence._groups
    calls_before = groups.calls
    await asyncio.gather(*(a.invalidate(f"p:{i}") for i in db))
    assert groups.calls - calls_before == 1
    for i, d in db.items():
        body, source = await b.lookup_after_write(f"p:{i}", "k", d.load)
        assert (body, source) == (b"v2", "db")
    assert await b.drain()
    for i, d in db.items():
        assert await b.get(f"p:{i}", "k", d.load) == b"v2"


async def test_a_writer_does_not_wait_for_a_slow_process(caches):
    """No acknowledgements: a process slow to read its messages (a stalled
    loop) costs the writer nothing."""
    a, b = caches
    db = FakeDatabase()
    await b.get("p:8", "k", db.load)
    delay_listener(b, 1.0)  # b is busy: its listener runs late
    db.value = b"v2"
    slowest = 0.0
    for _ in range(5):
        start = time.perf_counter()
        await a.invalidate("p:8")
        slowest = max(slowest, time.perf_counter() - start)
    assert slowest < 0.05, slowest


async def test_a_process_whose_listener_lags_past_the_lease_serves_no_old_answer(caches):
    """b reads its messages far later than LEASE_S: it cannot renew its lease
    while its listener lags (a renewal needs a beacon heard through the same
    channel, after the invalidation), so LEASE_S after the write b no longer
    answers from its local tier."""
    a, b = caches
    db = FakeDatabase()
    await b.get("p:9", "k", db.load)
    delay_listener(b, cache_module.LEASE_S + 0.5)
    db.value = b"v2"
    await a.invalidate("p:9")
    await asyncio.sleep(cache_module.LEASE_S)  # the subject: the staleness bound
    assert await b.get("p:9", "k", db.load) == b"v2"


async def test_a_stalled_process_does_not_join_a_pre_write_load(caches):
    """b's load started before the write and is still running when the writer,
    replies; b's listener lags past the lease. LEASE_S after the write, a
    read on b (no lease: it has not applied the write) must not join that
    load. (CI caught this when acks were awaited: the first acks of a run
    came late and a review list lacked an acknowledged review.)"""
    a, b = caches
    db = FakeDatabase()
    db.gate = asyncio.Event()
    first = asyncio.create_task(b.get("p:4", "k", db.load))
    await db.reads_reach(1)  # b's load has read the old value and waits
    delay_listener(b, cache_module.LEASE_S + 0.5)
    b._coherence.tasks[1].cancel()  # a stalled loop does not ping either (the ping would drop all)
    db.value = b"v2"
    await a.invalidate("p:4")
    await asyncio.sleep(cache_module.LEASE_S)  # the subject: the staleness bound
    second = asyncio.create_task(b.get("p:4", "k", db.load))
    await db.reads_reach(2)  # second's own load (had it joined first's, it would not come)
    db.gate.set()
    assert await first == b"v1"  # it started before the write: either answer is fine
    assert await second == b"v2"


@pytest.mark.parametrize("tier", ["local", "redis"])
async def test_a_writer_with_an_open_breaker_still_invalidates(caches, tier):
    """The writer's breaker has been open a while (its own overloaded loop
    timed out its calls) while Redis serves everyone else: its write must
    still reach them. (Skipping Redis while the breaker was open, and a's
    lease wait long over, let CI read a review list without an acknowledged
    review.)"""
    a, b = caches
    db = FakeDatabase()
    await a.get("p:5", "k", db.load)
    assert await a.drain()  # a's Redis fill runs in the background
    await b.get("p:5", "k", db.load)
    if tier == "redis":
        b._drop_all_local()  # b's next read asks Redis
    a._coherence.tasks[1].cancel()  # a's pings time out too: no replay comes to the rescue
    a._breaker.trip(TimeoutError("a stalled"))
    a._breaker.down_since = time.monotonic() - 2 * cache_module.LEASE_S
    assert not a.redis_usable() and b.redis_usable() and b.local_live()
    db.value = b"v2"
    await a.invalidate("p:5")
    assert await b.drain()
    assert await b.get("p:5", "k", db.load) == b"v2"


async def test_reads_keep_off_redis_until_writers_replay_after_an_outage(caches):
    """A write during an outage could not delete the old answer from Redis;
    its writer replays that on its first ping that gets through. Another
    process that comes back first must not read the old answer meanwhile."""
    a, b = caches
    db = FakeDatabase()
    await a.get("p:6", "k", db.load)
    assert await a.drain()  # a's Redis fill runs in the background
    b._drop_all_local()
    for c in (a, b):
        c._breaker.trip(ConnectionError("redis down"))
    a._coherence.pending.add("p:6")  # a's invalidation failed during the outage
    db.value = b"v2"
    assert await b.ping()  # b hears Redis again before a replays
    assert await b.get("p:6", "k", db.load) == b"v2"
    assert await a.ping()  # a replays its write
    await asyncio.sleep(cache_module.RECOVERY_GRACE_S)  # the subject: the grace running out
    assert b.redis_usable()
    assert await b.get("p:6", "k", db.load) == b"v2"


async def test_invalidation_is_scoped(caches):
    a, b = caches
    db = FakeDatabase()
    await a.get("p:1", "k", db.load)
    await a.get("p:2", "k", db.load)
    await b.invalidate("p:1")
    assert await a.drain()
    reads = db.reads
    await a.get("p:2", "k", db.load)
    assert db.reads == reads  # p:2 still cached
    await a.get("p:1", "k", db.load)
    assert db.reads == reads + 1


async def test_no_stale_fill_after_a_concurrent_write(caches):
    a, b = caches
    db = FakeDatabase()
    db.gate = asyncio.Event()
    # A reader misses and reads the old value from the database...
    slow_read = asyncio.create_task(a.get("p:3", "k", db.load))
    await db.reads_reach(1)
    assert db.reads == 1
    # ...a write commits and invalidates (from the other process) before it fills...
    db.value = b"v2"
    await b.invalidate("p:3")
    # ...then the slow reader finishes with the value it read before the write.
    db.gate.set()
    assert await slow_read == b"v1"
    assert await a.drain()  # let its (refused) Redis fill run
    db.gate = None
    # Nothing old was left behind: not in a's local tier, not in Redis.
    assert await a.get("p:3", "k", db.load) == b"v2"
    fresh = make_like(a)
    await fresh.start()
    assert await fresh.wait_ready()
    try:
        assert await fresh.get("p:3", "k", FakeDatabase().load) == b"v2"
    finally:
        await fresh.stop()
        await fresh._redis.aclose()


async def test_a_batch_of_fills_refuses_only_the_scope_written_meanwhile(caches):
    """Fills of one loop tick go to Redis as one script call: each is still
    checked against its own scope's token, so the scope written during the
    reads is refused and the other one is filled."""
    a, b = caches
    db = FakeDatabase()
    db.gate = asyncio.Event()
    reads = [asyncio.create_task(a.get(scope, "k", db.load)) for scope in ("p:21", "p:22")]
    await db.reads_reach(2)
    assert db.reads == 2  # both missed and read v1 before the write
    await b.invalidate("p:21")
    db.gate.set()  # both loads finish in one tick: one batch of two fills
    assert await asyncio.gather(*reads) == [b"v1", b"v1"]
    assert await a.drain()  # let the batch run
    redis = a._redis  # a plain client, or a cluster's (it finds each key's node)
    gen = a._coherence.gen
    assert await redis.hget(f"t:{gen}:p:21", "k") is None
    assert await redis.hget(f"t:{gen}:p:22", "k") == b"v1"


async def test_a_batch_of_redis_reads_gives_each_reader_its_own_answer(caches):
    """Misses of one loop tick share one script call to Redis; each reader must
    get the answer of its own scope and key, not its neighbour's."""
    a, b = caches
    bodies = {("p:31", "k"): b"a31k", ("p:31", "j"): b"a31j", ("p:32", "k"): b"a32k"}
    for (scope, key), body in bodies.items():

        async def load(body: bytes = body) -> bytes:
            return body

        await a.get(scope, key, load)
    assert await a.drain()  # a's fills reach Redis

    async def never() -> bytes:
        raise AssertionError("should have been served by Redis")

    found = await asyncio.gather(*(b.lookup(scope, key, never) for scope, key in bodies))
    assert found == [(body, "redis") for body in bodies.values()]


async def test_a_fill_rides_with_the_next_read_batch(caches, redis_server):
    """A miss's fill waits for the next read batch and goes in its command:
    two misses in a row cost three script calls (read; read with the first
    fill; the second fill alone), not four, and both fills land."""
    a, b = caches
    db = FakeDatabase()
    admin = Redis.from_url(redis_server.url)
    for c in (a, b):
        c._coherence.tasks[1].cancel()  # no pings (their beacon scripts would count)
    try:
        await admin.config_resetstat()
        await a.get("p:41", "k", db.load)
        await a.get("p:42", "k", db.load)
        await a._redis_tier.drain()  # p:42's fill found no read to ride with: sent alone
        assert (await admin.info("commandstats"))["cmdstat_evalsha"]["calls"] == 3
    finally:
        await admin.aclose()

    async def never() -> bytes:
        raise AssertionError("should have been served by Redis")

    for scope in ("p:41", "p:42"):
        assert await b.lookup(scope, "k", never) == (b"v1", "redis")


async def test_a_fill_waiting_to_ride_is_sent_at_stop(caches, redis_server, monkeypatch):
    monkeypatch.setattr(redis_tier, "FILL_RIDE_S", 60.0)  # only stop() can send it
    a, _ = caches
    await a.get("p:43", "k", FakeDatabase().load)
    await a.stop()
    admin = Redis.from_url(redis_server.url)
    try:
        assert await admin.hget(f"t:{a._coherence.gen}:p:43", "k") == b"v1"
    finally:
        await admin.aclose()


async def test_a_read_finds_the_fill_riding_in_its_batch(caches, monkeypatch):
    """A batch's script runs its fills before its reads: a read that carries a
    fill of its own key finds the body instead of loading it again."""
    monkeypatch.setattr(redis_tier, "FILL_RIDE_S", 60.0)  # the fill waits for a read to ride with
    a, _ = caches
    await a.get("p:51", "k", FakeDatabase().load)
    a._drop_all_local()  # a's next read asks Redis, carrying the waiting fill

    async def never() -> bytes:
        raise AssertionError("should have been served by Redis")

    assert await a.lookup("p:51", "k", never) == (b"v1", "redis")


async def test_the_fill_queue_is_bounded(caches, redis_server, monkeypatch):
    """At most _FILL_QUEUE_MAX fills wait for Redis; beyond, a fill is skipped
    (always correct: a later reader loads and fills again)."""
    monkeypatch.setattr(redis_tier, "_FILL_QUEUE_MAX", 5)
    a, _ = caches
    db = FakeDatabase()
    db.gate = asyncio.Event()
    reads = [asyncio.create_task(a.get(f"p:{60 + i}", "k", db.load)) for i in range(20)]
    await db.reads_reach(20)
    db.gate.set()  # the 20 loads finish in one tick: 20 fills, no read batch to take them
    assert await asyncio.gather(*reads) == [b"v1"] * 20
    assert await a.drain()
    admin = Redis.from_url(redis_server.url)
    try:
        gen = a._coherence.gen
        filled = [await admin.hget(f"t:{gen}:p:{60 + i}", "k") for i in range(20)]
    finally:
        await admin.aclose()
    assert filled.count(b"v1") == 5


async def test_drain_waits_until_earlier_invalidations_are_applied(caches, redis_server):
    """drain() returns only once this process's listener has handled every
    invalidation published before the call (a beacon it publishes comes back through
    the same channel), however late the listener runs."""
    a, _ = caches
    await a.get("p:71", "k", FakeDatabase().load)
    delay_listener(a, 0.05)
    admin = Redis.from_url(redis_server.url)
    try:
        message = {"scopes": ["p:71"], "id": "from-a-test", "from": "elsewhere"}
        await admin.publish("t:inval", orjson.dumps(message))
    finally:
        await admin.aclose()
    assert await a.drain()
    assert "p:71" not in a._local


@pytest.mark.parametrize("write", ["invalidate", "flush_all"])
async def test_writer_keeps_no_old_answer_read_from_redis_mid_invalidation(
    caches, redis_server, write
):
    """The writer drops its local scope before its delete reaches Redis. A read
    in the writer that asks Redis in between still finds the old answer there
    and fills the local tier with it; that entry must not outlive the
    invalidation. Found by tests/reliability/test_coherence.py: a few reads
    right after a POST's reply lacked it. Redis pauses writes here (reads go
    on), which holds the writer's delete while the read gets through."""
    a, _ = caches
    db = FakeDatabase()
    assert await a.get("p:6", "k", db.load) == b"v1"
    assert await a.drain()  # let the Redis fill land
    db.value = b"v2"
    admin = Redis.from_url(redis_server.url)
    a._coherence.tasks[1].cancel()  # its pings (a writing script) would time out on the pause
    try:
        await admin.client_pause(2_000, all=False)  # WRITE mode: reads are served
        writing = asyncio.create_task(
            a.invalidate("p:6") if write == "invalidate" else a.flush_all()
        )
        # Not background work: the writer's own task gets going and is held by
        # the pause (the assert checks it is).
        await asyncio.sleep(0.02)
        assert not writing.done()
        # Started before the write's reply: the old answer is allowed here.
        assert await a.lookup("p:6", "k", db.load) == (b"v1", "redis")
        await admin.client_unpause()
        await writing
    finally:
        await admin.client_unpause()
        await admin.aclose()
    assert await a.get("p:6", "k", db.load) == b"v2"


async def test_readers_after_a_write_do_not_join_a_pre_write_load(caches):
    a, b = caches
    db = FakeDatabase()
    db.gate = asyncio.Event()
    early = asyncio.create_task(a.get("p:4", "k", db.load))
    await db.reads_reach(1)
    db.value = b"v2"
    await b.invalidate("p:4")
    assert await a.drain()  # a has applied the invalidation
    late = asyncio.create_task(a.get("p:4", "k", db.load))
    await db.reads_reach(2)  # late's own load (had it joined early's, it would not come)
    db.gate.set()
    assert await early == b"v1"
    assert await late == b"v2"


async def test_stampede_costs_one_load_per_process(caches):
    a, b = caches
    db = FakeDatabase()
    db.gate = asyncio.Event()
    readers = [asyncio.create_task(c.get("p:5", "k", db.load)) for c in (a, b) for _ in range(50)]
    await db.reads_reach(2)  # one load per process (more would come before the gate opens)
    db.gate.set()
    assert set(await asyncio.gather(*readers)) == {b"v1"}
    assert db.reads <= 2  # one per process (the second may even hit Redis)


async def test_local_tier_is_bounded_in_bytes(redis_server):
    redis_server.flush()
    c = make_cache(redis_server.url, local_max_bytes=10_000)
    await c.start()
    assert await c.wait_ready()
    try:
        for i in range(100):
            await c.get(f"p:{i}", "k", returns(b"x" * 1000))
        assert 0 < c._local_tier.held_bytes <= 10_000
        assert len(c._local) <= 10
        assert "p:99" in c._local and "p:0" not in c._local  # least recently used went first
    finally:
        await c.stop()


async def test_small_answers_are_counted_with_their_overhead(redis_server):
    """The budget bounds what the entries really hold (keys, dicts, object
    headers), not just their bodies: counting bodies alone let a walk over
    many small answers hold several times the budget."""
    redis_server.flush()
    c = make_cache(redis_server.url, local_max_bytes=20_000)
    await c.start()
    assert await c.wait_ready()
    try:
        for i in range(500):
            await c.get(f"p:{i}", "k", returns(b"[]"))
        held = sum(
            sys.getsizeof(scope)
            + sys.getsizeof(entries)
            + sum(sys.getsizeof(key) + sys.getsizeof(body) for key, body in entries.items())
            for scope, entries in c._local.items()
        )
        assert 0 < held <= 20_000
    finally:
        await c.stop()


async def test_scope_sequences_are_bounded_and_an_evicted_one_still_refuses_a_stale_fill(
    caches, monkeypatch
):
    """At most _SCOPE_SEQ_MAX scopes keep their own invalidation sequence; a
    scope evicted from that map still refuses a fill whose read began before
    its invalidation (evicted scopes count as invalidated at the newest
    evicted sequence)."""
    monkeypatch.setattr(local, "_SCOPE_SEQ_MAX", 100)
    a, b = caches
    db = FakeDatabase()
    db.gate = asyncio.Event()
    slow_read = asyncio.create_task(a.get("p:0", "k", db.load))
    await db.reads_reach(1)
    db.value = b"v2"
    await b.invalidate("p:0")  # a has dropped p:0 when this returns
    await a.invalidate(*(f"q:{i}" for i in range(150)))  # p:0's sequence is evicted
    assert len(a._local_tier.scope_seq) <= 100
    db.gate.set()
    assert await slow_read == b"v1"
    db.gate = None
    assert await a.get("p:0", "k", db.load) == b"v2"


async def test_redis_ttls_are_jittered(caches, redis_server):
    a, _ = caches
    for i in range(30):
        await a.get(f"p:{i}", "k", returns(b"body"))
    assert await a.drain()
    client = Redis.from_url(redis_server.url)
    ttls = {await client.ttl(f"t:0:p:{i}") for i in range(30)}
    await client.aclose()
    assert all(270 <= t <= 330 for t in ttls), ttls
    assert len(ttls) > 3  # not all expiring together


async def test_flush_namespace_forgets_everything(caches, redis_server):
    a, b = caches
    db = FakeDatabase()
    await a.get("p:1", "k", db.load)
    await b.get("p:2", "k", db.load)
    db.value = b"reloaded"
    assert await flush_namespace(redis_server.url, "t")
    assert await a.drain() and await b.drain()  # the others apply it within the bound
    assert await a.get("p:1", "k", db.load) == b"reloaded"
    assert await b.get("p:2", "k", db.load) == b"reloaded"


async def test_the_generation_never_moves_backwards(caches):
    """A flush's INCR lost in a failover leaves Redis a generation behind:
    the next ping raises it again (every process keeps the largest it saw),
    so no process reads the pre-flush generation's entries."""
    a, b = caches
    assert await a.flush_all()
    assert await b.drain()
    gen = int(a._coherence.gen)
    assert gen >= 1 and b._coherence.gen == str(gen)
    redis = a._redis
    await redis.set(a._coherence._gen_key, gen - 1)  # the INCR "lost"
    assert await b.ping() and await a.ping()
    assert int(await redis.get(a._coherence._gen_key)) == gen
    assert a._coherence.gen == b._coherence.gen == str(gen)


async def _timed_get(c: ResponseCache, db: FakeDatabase, scope: str = "p:1") -> float:
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
        slowest = max([await _timed_get(a, db, f"p:{i}") for i in range(20)])
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
    c = make_cache(private_redis.url)
    await c.start()
    assert await c.wait_ready()
    db = FakeDatabase()
    try:
        private_redis.pause()
        await _timed_get(c, db, "p:0")  # waits out its deadline: the breaker opens
        start = time.perf_counter()
        for i in range(1, 21):
            assert await c.get(f"p:{i}", "k", db.load) == b"v1"
        assert time.perf_counter() - start < 0.25  # 20 deadlines of 50 ms would take 1 s
    finally:
        private_redis.resume()
        await c.stop()


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
