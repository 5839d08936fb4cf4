"""Read replicas with causal reads (services/common/replicas.py), on a private
primary and a streaming replica (tests/reliability/replica_pair.py): reads
go to the replica only once it has replayed what they require, and the
coherence checker holds on them. Each causal test has a control with the
causal check off (`router.causal = False`, a naive router) that must show
the stale answer the check prevents. The replica's and the primary's
failures are in test_replica_failures.py."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path

from redis import asyncio as aioredis

from services.common.resources import CACHE, DB
from tests.conftest import RedisServer
from tests.gateway.harness import ServiceInstance, free_instance_base
from tests.reliability.harness import metric_samples, record_figures
from tests.reliability.replica_pair import (
    REPLICA_DELAY_MS,
    Pair,
    fresh,
    make_app,
    post_review,
    router_of,
    settle,
    summaries,
)


async def test_reads_are_served_by_the_replica_and_writes_never(
    aiohttp_client, pair: Pair, redis_server: RedisServer
) -> None:
    await fresh(pair, redis_server)
    client = await make_app(aiohttp_client, pair, redis_server)
    await post_review(client, 1, "first")
    await settle(pair, client)
    before, counts = pair.replica_reads("reviews"), router_of(client).counts()
    assert await summaries(client, 1) == {"first"}
    resp = await client.get("/reviews/meta?product_id=1")
    assert resp.status == 200 and (await resp.json())["ratings"] == {"4": "1"}
    assert await summaries(client, 1) == {"first"}  # a local hit: no query at all
    assert pair.replica_reads("reviews") - before == 2, pair.replica_log()[-6000:]
    after = router_of(client).counts()
    assert after["replica"] - counts["replica"] == 2
    log = pair.replica_log()
    assert "INSERT INTO reviews" not in log and "UPDATE reviews" not in log
    text = await (await client.get("/metrics")).text()
    assert 'runway_db_reads_total{reason="caught_up",server="replica"}' in text
    assert 'runway_db_replica_up{replica="127.0.0.1:' in text
    ready = await (await client.get("/readyz")).json()
    assert [r["up"] for r in ready["replicas"]] == [True]
    async with router_of(client).replicas[0].pool.acquire() as conn:  # as the primary's
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        assert await conn.fetchval("SHOW jit") == "off"


async def test_a_read_right_after_a_write_sees_it_and_the_replica_serves_again_later(
    aiohttp_client, pair: Pair, redis_server: RedisServer
) -> None:
    await fresh(pair, redis_server)
    client = await make_app(aiohttp_client, pair, redis_server)
    router = router_of(client)
    await post_review(client, 2, "old")
    await settle(pair, client)
    assert await summaries(client, 2) == {"old"}  # on the replica, now cached
    on_replica = pair.replica_reads("reviews")
    counts = router.counts()
    await post_review(client, 2, "new")
    assert await summaries(client, 2) == {"old", "new"}  # at once: the primary
    assert pair.replica_reads("reviews") == on_replica
    assert router.counts()["primary:not_caught_up"] == counts["primary:not_caught_up"] + 1
    await settle(pair, client)
    assert await summaries(client, 2, count=6) == {"old", "new"}  # a miss: the replica again
    assert pair.replica_reads("reviews") == on_replica + 1

    # Control: the naive router reads the lagging replica and the stale page
    # is what the client gets, and what the cache then keeps.
    router.causal = False
    await post_review(client, 2, "newer")
    stale = await summaries(client, 2)
    assert stale == {"old", "new"}, "the naive router did not read the lagging replica"
    assert await summaries(client, 2) == stale  # kept, under the post-write token
    router.causal = True


async def test_a_write_on_one_instance_is_read_on_the_other_from_a_lagging_replica(
    aiohttp_client, pair: Pair, redis_server: RedisServer
) -> None:
    await fresh(pair, redis_server)
    a = await make_app(aiohttp_client, pair, redis_server)
    b = await make_app(aiohttp_client, pair, redis_server)
    await post_review(a, 3, "one")
    await settle(pair, a, b)
    assert await summaries(b, 3) == {"one"}
    assert await summaries(a, 3) == {"one"}
    # The writer's session reads its write on the other instance at once,
    # whether or not b has heard of it yet (the marker's LSN routes the read).
    seen = []
    for i in range(5):
        marker = await post_review(a, 3, f"w{i}")
        seen.append(await summaries(b, 3, count=50, marker=marker))
    assert all(f"w{i}" in s for i, s in enumerate(seen)), seen
    # Any reader, once b has applied the invalidation (within the lease
    # bound; drain() waits for it here), and b not reading Redis (its adaptive
    # skip): the message's LSN alone sends the read past the lagging replica.
    b.app[CACHE]._redis_tier.pays_off = lambda: False
    for i in range(3):
        await post_review(a, 3, f"s{i}")
        assert await b.app[CACHE].drain()
        assert f"s{i}" in await summaries(b, 3, count=40 + i)
    del b.app[CACHE]._redis_tier.pays_off
    # The write's LSN also rides in the Redis token: a reader that found the
    # new token before its listener applied the message still waits for it.
    b_cache = b.app[CACHE]
    floor = b_cache._local_tier.required_lsn("p:3")
    assert b_cache.read_position("p:3", f"abc@{floor + 4096:x}") == floor + 4096
    assert b_cache.read_position("p:3", "abc") == "lsn_unknown"  # token without an LSN

    # Control: b reading naively shows a's acknowledged write missing, even
    # after b applied its invalidation and for the writer's own session.
    await settle(pair, a, b)
    router_of(b).causal = False
    marker = await post_review(a, 3, "unseen")
    assert await b.app[CACHE].drain()
    assert "unseen" not in await summaries(b, 3, count=50, marker=marker)
    router_of(b).causal = True


async def token_race(a, b, redis: RedisServer, product: int, summary: str) -> tuple[set, set]:
    """a writes while b's listener is held: b reads (a new key, so a local
    miss) after a's invalidation replaced the Redis token and before b applied
    its message, so only the token tells b about the write. Returns what b
    read then and what a reads once its write is acknowledged (b's fill drained)."""
    from services.reviews.app import CACHE_NAMESPACE

    cache = b.app[CACHE]
    key = f"{CACHE_NAMESPACE}:{cache._coherence.gen}:p:{product}"
    client = aioredis.Redis.from_url(redis.url)
    try:
        before = await client.hget(key, "_v")
        with listener_held(cache) as release:
            write = asyncio.create_task(post_review(a, product, summary))
            for _ in range(1000):  # until the invalidation script has run
                if await client.hget(key, "_v") != before:
                    break
                await asyncio.sleep(0.002)
            during = await summaries(b, product, count=11)
            release()
        await write
        assert await cache.drain()
        after = await summaries(a, product, count=11)
    finally:
        await client.aclose()
    return during, after


@contextlib.contextmanager
def listener_held(cache) -> Iterator[Callable[[], None]]:
    """This process's listener handles no pub/sub message until the yielded
    `release()` (then every held one, in order): a message still in flight,
    however long the read takes. Its beacons wait too, so its lease lapses
    LEASE_S after the last one it heard: a read after that goes to the primary."""
    coherence = cache._coherence
    gate = asyncio.Event()

    async def held(message: dict) -> None:
        await gate.wait()
        await type(coherence).handle_message(coherence, message)

    coherence.handle_message = held
    try:
        yield gate.set
    finally:
        gate.set()
        del coherence.handle_message


@contextlib.contextmanager
def lease_kept(cache) -> Iterator[None]:
    """The process's lease stays live whatever its listener hears: a listener
    behind by less than LEASE_S, however slow the machine. Afterwards the next
    beacon it hears renews it."""
    lease = cache._coherence.lease
    lease.until = math.inf
    try:
        yield
    finally:
        lease.until = 0.0


async def test_the_lsn_in_the_redis_token_covers_a_message_not_yet_applied(
    aiohttp_client, pair: Pair, redis_server: RedisServer
) -> None:
    await fresh(pair, redis_server)
    a = await make_app(aiohttp_client, pair, redis_server)
    b = await make_app(aiohttp_client, pair, redis_server)
    await post_review(a, 8, "old")
    await settle(pair, a, b)
    assert await summaries(b, 8) == {"old"}
    # The replica's replay paused and b's lease kept: only the token's LSN
    # can keep b's read off the replica, which lacks the write.
    counts = router_of(b).counts()
    async with pair.replay_paused():
        with lease_kept(b.app[CACHE]):
            during, after = await token_race(a, b, redis_server, 8, "new")
    assert during == {"old", "new"}
    assert after == {"old", "new"}
    late = router_of(b).counts()["primary:not_caught_up"] - counts["primary:not_caught_up"]
    assert late == 1, router_of(b).counts()  # b's read: the primary, for the token's LSN

    # Control: c ignoring the token's LSN reads the lagging replica and fills
    # Redis under the post-write token: a's acknowledged write is then missing
    # from a's own read, for the entry's whole TTL. (c caches its first miss:
    # under admission on second access a first miss fills nothing.) The
    # replica's replay is paused and c's lease kept (its listener within the
    # bound) so that c's read is certainly inside both windows, whatever a
    # stall of the machine; c's lag bound is wide enough for the pause.
    c = await make_app(
        aiohttp_client, pair, redis_server, cache_admit_on_second=False, replica_max_lag_ms=60_000
    )
    await settle(pair, a, c)
    cache = c.app[CACHE]
    position = cache.read_position
    cache.read_position = lambda scope, token: position(scope, None)
    reads = router_of(c).counts()["replica"]
    async with pair.replay_paused():
        with lease_kept(cache):
            during, after = await token_race(a, c, redis_server, 8, "newer")
    assert router_of(c).counts()["replica"] == reads + 1  # c's read was the replica's
    assert "newer" not in during and "newer" not in after, (during, after)

    # b skipping Redis (its adaptive skip) reads no token: until its listener
    # applies the message, its read may lack the write (a session other than
    # the writer's: within the bound), but it fills nothing under the new
    # token, so the writer's read after its acknowledgement has the write,
    # and so does b's once the message is applied.
    await settle(pair, a, b)  # the replica lacks only the write to come
    b.app[CACHE]._redis_tier.pays_off = lambda: False
    try:
        during, after = await token_race(a, b, redis_server, 8, "skipped")
        assert "skipped" in after, (during, after)
        assert "skipped" in await summaries(b, 8, count=12)
    finally:
        del b.app[CACHE]._redis_tier.pays_off


async def test_without_a_lease_reads_go_to_the_primary(
    aiohttp_client, pair: Pair, private_redis: RedisServer
) -> None:
    """Redis dies: a's invalidation fails (a waits out every lease, then
    acknowledges), b never hears of the write and has no lease: its reads go
    to the primary. Control: b taking its positions without the lease reads the
    lagging replica and misses the acknowledged write."""
    await fresh(pair, private_redis)
    a = await make_app(aiohttp_client, pair, private_redis)
    b = await make_app(aiohttp_client, pair, private_redis)
    await post_review(a, 9, "old")
    await settle(pair, a, b)
    assert await summaries(b, 9) == {"old"}
    private_redis.stop()
    await post_review(a, 9, "new")
    counts = router_of(b).counts()
    assert await summaries(b, 9, count=12) == {"old", "new"}
    assert router_of(b).counts()["primary:no_lease"] == counts["primary:no_lease"] + 1

    await post_review(a, 9, "newer")
    cache = b.app[CACHE]  # the control: positions read without the lease check
    cache.read_position = lambda scope, token: cache._local_tier.required_lsn(scope)
    assert "newer" not in await summaries(b, 9, count=13)


async def test_with_the_cache_disabled_no_replica_is_used(
    aiohttp_client, pair: Pair, redis_server: RedisServer
) -> None:
    await fresh(pair, redis_server)
    client = await make_app(aiohttp_client, pair, redis_server, cache_enabled=False)
    assert client.app[DB]._router is None  # no lease ever: replicas would serve nothing
    await post_review(client, 10, "x")
    assert await summaries(client, 10) == {"x"}


# (name, causal check on, replica delay ms, products, operations). The short
# lag lets many more reads reach the replica, on tighter races.
COHERENCE_RUNS = (
    ("causal", True, REPLICA_DELAY_MS, 8, 1500),
    ("causal-30ms", True, 30, 256, 1500),
    ("naive", False, REPLICA_DELAY_MS, 8, 500),
)
CAUSAL_ATTEMPTS = 4


async def test_coherence_with_reads_on_the_lagging_replica(
    aiohttp_client, pair: Pair, redis_server: RedisServer
) -> None:
    """tests/reliability/test_coherence.py's randomized checker against two
    instances per service (in this process, over HTTP) reading the lagging
    replica; then its control, with the causal check off, must report stale
    reads."""
    from tests.reliability.test_coherence import MODELS, History, run_clients

    figures = {}
    for service in ("reviews", "qa"):
        await fresh(pair, redis_server, service)
        # A 1 s Redis deadline, not 50 ms: on a loaded machine a timed-out
        # call opens the breaker, reads then fall back to the primary, and the
        # run would check no replica read at all (seen once with both cores
        # busy). Redis deadlines have their own tests (test_cache_faults).
        apps = [
            await make_app(aiohttp_client, pair, redis_server, service, redis_timeout_ms=1000)
            for _ in range(2)
        ]
        await settle(pair, *apps, service=service)
        bases = [str(app.make_url("")).rstrip("/") for app in apps]
        model_class, first_product = MODELS[service]
        for name, causal, delay_ms, products, ops in COHERENCE_RUNS:
            # A causal run checks replica reads only if some happen: a load
            # reaches the replica when its scope's last write and its own
            # session's last write (the marker, fresh for 1 s) have replayed
            # there. Reviews' loads are held by their scopes (8 products, each
            # written every ~30 ms); qa's answer pages are of questions rarely
            # written, but every client writes every ~37 ms, so its marker
            # holds them: with markers never fresh (a throwaway FRESH_S = 0)
            # qa's runs had 166 and 423 replica reads where they have 2 and
            # 10, reviews' 21 either way. CI once had none. So a causal run
            # with none is run again, on fresh products, a few times.
            for app in apps:
                router_of(app).causal = causal
            replica_reads = 0
            for attempt in range(CAUSAL_ATTEMPTS if causal else 1):
                await asyncio.to_thread(pair.set_delay, delay_ms)
                model = model_class(first_product)
                model.products = list(range(first_product, first_product + products))
                first_product += 1000
                before = sum(router_of(app).counts()["replica"] for app in apps)
                history = History()
                try:
                    run = await run_clients(bases, model, ops, history)
                finally:
                    await asyncio.to_thread(pair.set_delay, REPLICA_DELAY_MS)
                replica_reads = sum(router_of(app).counts()["replica"] for app in apps) - before
                figures[f"{service}:{name}"] = {
                    "attempts": attempt + 1,
                    "checks": history.checks,
                    "violations": len(history.violations),
                    "replica_reads": replica_reads,
                    **run,
                }
                if causal:
                    assert history.violations == [], history.violations[:5]
                else:
                    assert history.violations, "naive replica reads: the checker saw nothing stale"
                if replica_reads:
                    break
            if causal:
                assert replica_reads > 0, "no read reached the replica"
    record_figures("replicas[coherence]", figures)


async def test_coherence_across_processes_reading_the_replica(
    pair: Pair, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The same checker against two real reviews processes (python -m, their
    settings from the environment), the replica 30 ms then 300 ms behind."""
    from tests.reliability.test_coherence import MODELS, History, run_clients

    await fresh(pair, redis_server)
    env = {
        "REVIEWS_DATABASE_URL": pair.dsns["reviews"],
        "REVIEWS_REPLICA_URLS": pair.replica_dsn("reviews"),
        "REDIS_URL": redis_server.url,
        "DB_POOL_MAX": "4",
    }
    instances = [
        ServiceInstance("reviews", free_instance_base(1), env, tmp_path / f"reviews-{i}.log")
        for i in range(2)
    ]
    figures = {}
    try:
        for instance in instances:
            await asyncio.to_thread(instance.start)
        bases = [f"http://127.0.0.1:{i.port}" for i in instances]
        model_class, first_product = MODELS["reviews"]
        for delay_ms, products in ((30, 256), (REPLICA_DELAY_MS, 8)):
            await asyncio.to_thread(pair.set_delay, delay_ms)
            before = sum(replica_reads_of(i.port) for i in instances)
            model = model_class(first_product)
            model.products = list(range(first_product, first_product + products))
            history = History()
            run = await run_clients(bases, model, 1500, history)
            reads = sum(replica_reads_of(i.port) for i in instances) - before
            figures[f"{delay_ms}ms"] = {
                "checks": history.checks,
                "violations": len(history.violations),
                "replica_reads": reads,
                **run,
            }
            assert history.violations == [], history.violations[:5]
            assert reads > 0, "no read reached the replica"
            first_product += 1000
    finally:
        await asyncio.to_thread(pair.set_delay, REPLICA_DELAY_MS)
        for instance in instances:
            await asyncio.to_thread(instance.stop)
    record_figures("replicas[coherence-processes]", figures)


def replica_reads_of(port: int) -> float:
    key = ("runway_db_reads_total", (("reason", "caught_up"), ("server", "replica")))
    return metric_samples(port).get(key, 0.0)
