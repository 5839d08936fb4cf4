"""The cache's fills and bounds, each against a real Redis and a Redis
Cluster: a read fills the tiers (local, then Redis for another process), no
stale fill after a concurrent write, batched reads and fills, stampede
protection, bounded memory and jittered TTLs."""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from services.common.cache import (
    ResponseCache,
    local,
    redis_tier,
)
from tests.common.cache_harness import (
    FakeDatabase,
    counter,
    make_cache,
    returns,
    started_cache,
)


def make_like(cache: ResponseCache) -> ResponseCache:
    """Another process's cache on the same Redis (or cluster) as `cache`."""
    return make_cache(cache.test_url, cluster=cache._cluster)


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


async def test_stampede_costs_one_load_per_process(caches):
    a, b = caches
    db = FakeDatabase()
    db.gate = asyncio.Event()
    # Readers join a load only under a live lease (flights.py); one at the
    # tail of its 250 ms, its renewal late on a loaded machine, would lapse
    # between the readers and send the last ones to Postgres on their own,
    # as it should. So the readers start on freshly renewed leases.
    renewed = [asyncio.shield(c._coherence.lease_renewed()) for c in caches]
    async with asyncio.timeout(2):
        await asyncio.gather(*renewed)
    readers = [asyncio.create_task(c.get("p:5", "k", db.load)) for c in (a, b) for _ in range(50)]
    await db.reads_reach(2)  # one load per process (more would come before the gate opens)
    db.gate.set()
    assert set(await asyncio.gather(*readers)) == {b"v1"}
    assert db.reads <= 2  # one per process (the second may even hit Redis)


async def test_local_tier_is_bounded_in_bytes(redis_server):
    redis_server.flush()
    async with started_cache(redis_server.url, local_max_bytes=10_000) as c:
        for i in range(100):
            await c.get(f"p:{i}", "k", returns(b"x" * 1000))
        assert 0 < c._local_tier.held_bytes <= 10_000
        assert len(c._local) <= 10
        assert "p:99" in c._local and "p:0" not in c._local  # least recently used went first


async def test_small_answers_are_counted_with_their_overhead(redis_server):
    """The budget bounds what the entries really hold (keys, dicts, object
    headers), not just their bodies: counting bodies alone let a walk over
    many small answers hold several times the budget."""
    redis_server.flush()
    async with started_cache(redis_server.url, local_max_bytes=20_000) as c:
        for i in range(500):
            await c.get(f"p:{i}", "k", returns(b"[]"))
        held = sum(
            sys.getsizeof(scope)
            + sys.getsizeof(entries)
            + sum(sys.getsizeof(key) + sys.getsizeof(body) for key, body in entries.items())
            for scope, entries in c._local.items()
        )
        assert 0 < held <= 20_000


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
