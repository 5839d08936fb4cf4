"""The cache's coherence, each against a real Redis and a Redis Cluster:
the writer's session reads its write in any process, other readers see it
within the lease, invalidations are scoped, grouped and never wait for a slow
or stalled process, and no process serves or joins a load older than a write
it has heard of."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from redis.asyncio import Redis

from services.common import cache as cache_module
from services.common.cache import (
    ResponseCache,
    flush_namespace,
)
from tests.common.cache_harness import (
    FakeDatabase,
    counter,
)


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
