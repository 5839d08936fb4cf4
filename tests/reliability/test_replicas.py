"""Read replicas with causal reads (services/common/replicas.py), on a private
primary and a streaming replica delayed by REPLICA_DELAY_MS (so it certainly
lags a write): never the machine's shared Postgres. Reads are counted on the
replica itself (its log, log_statement=all, by application_name); each causal
test has a control with the causal check off (`router.causal = False`, a
naive router) that must show the stale answer the check prevents."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import pytest
from redis import asyncio as aioredis

from infra.pg_replica import Replica, hot_standby_settings
from services.common.replicas import ReplicaRouter
from services.common.resources import CACHE, DB
from services.common.settings import Settings
from services.common.write_marker import COOKIE, HEADER
from tests.conftest import RedisServer, truncate_all
from tests.gateway.harness import ServiceInstance, free_instance_base
from tests.reliability.harness import fresh_database, metric_samples, record_figures
from tests.reliability.pgcluster import PgCluster, postgres_bin

REPLICA_DELAY_MS = 300
# What the services' read statements name (a log entry of one is counted).
TABLES = {"reviews": ("FROM reviews", "product_ratings"), "qa": ("FROM questions", "FROM answers")}
NEW = {"rating": 4, "body": "b" * 60, "recommend": True, "name": "n", "email": "e@example.com"}


@dataclass
class Pair:
    primary: PgCluster
    replica: Replica
    dsns: dict[str, str]  # service -> database on the primary

    def replica_dsn(self, service: str) -> str:
        return self.replica.dsn(self.dsns[service].rsplit("/", 1)[1])

    def replica_reads(self, service: str) -> int:
        """The service's own statements its pools ran on the replica (its log;
        asyncpg's type introspection on a new connection left out)."""
        entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", self.replica_log())
        return sum(
            1
            for entry in entries
            if f"app=runway-{service} " in entry
            and "LOG:  execute" in entry
            and "pg_catalog" not in entry
            and any(table in entry for table in TABLES[service])
        )

    def replica_log(self) -> str:
        return self.replica.log.read_text(errors="replace")

    def set_delay(self, delay_ms: int) -> None:
        settings = asyncio.run(hot_standby_settings(self.primary.admin_url))
        self.replica.configure(delay_ms=delay_ms, settings={**settings, **LOGGING})
        self.replica._pg_ctl("reload")


LOGGING = {"log_statement": "all", "log_line_prefix": "%m [%p] app=%a db=%d "}


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no Postgres server binaries (initdb) installed: cannot run a private cluster")
    primary = PgCluster(bin_dir)
    replica: Replica | None = None
    dsns: dict[str, str] = {}
    try:
        primary.init()
        primary.start()
        for service in ("reviews", "qa"):
            dsns[service] = fresh_database(service, "replica", primary.admin_url)
        replica = asyncio.run(primary.replica(delay_ms=REPLICA_DELAY_MS))
        made = Pair(primary, replica, dsns)
        made.set_delay(REPLICA_DELAY_MS)
        yield made
    finally:
        if replica is not None:
            replica.destroy()
        primary.destroy()


async def make_app(aiohttp_client, pair: Pair, redis: RedisServer, service="reviews", **over):
    create_app = importlib.import_module(f"services.{service}.app").create_app
    # Not tests.conftest.settings_for: under RUNWAY_TEST_POOLER=1 that points the
    # app at the shared Postgres through PgBouncer; this primary is private.
    settings = replace(
        Settings.from_env(service, env={}),
        database_url=pair.dsns[service],
        redis_url=redis.url,
        pool_min=1,
        pool_max=5,
        replica_urls=(pair.replica_dsn(service),),
        **over,
    )
    client = await aiohttp_client(create_app(settings))
    if settings.cache_enabled:
        assert await client.app[CACHE].wait_ready()
    return client


def router_of(client) -> ReplicaRouter:
    router = client.app[DB]._router
    assert router is not None
    return router


async def settle(pair: Pair, *clients, service: str = "reviews", timeout_s: float = 5) -> None:
    """Until the replica has replayed everything written so far and every
    client's router knows it (and its cache knows its LSN floor)."""
    conn = await asyncpg.connect(pair.dsns[service])
    try:
        target = await conn.fetchval("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8")
    finally:
        await conn.close()
    deadline = time.monotonic() + timeout_s
    while True:
        ready = [
            router_of(c).replicas[0].replay >= target
            and router_of(c).replicas[0].fresh
            and c.app[CACHE]._local_tier.lsn_floor is not None
            for c in clients
        ]
        if all(ready):
            return
        assert time.monotonic() < deadline, f"replica not caught up: {ready}"
        await asyncio.sleep(0.02)


async def fresh(pair: Pair, redis: RedisServer, service: str = "reviews") -> None:
    await truncate_all(pair.dsns[service])
    redis.flush()


async def post_review(client, product: int, summary: str) -> str:
    """Posts a review; returns the write's session marker (services/common/write_marker.py)."""
    resp = await client.post("/reviews", json={**NEW, "product_id": product, "summary": summary})
    assert resp.status == 201, await resp.text()
    return resp.headers[HEADER]


async def summaries(client, product: int, count: int = 5, marker: str | None = None) -> set[str]:
    """The page's summaries; with `marker`, read as the session that wrote it."""
    headers = {"Cookie": f"{COOKIE}={marker}"} if marker else {}
    resp = await client.get(f"/reviews?product_id={product}&count={count}", headers=headers)
    assert resp.status == 200, await resp.text()
    return {r["summary"] for r in (await resp.json())["results"]}


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
    """a writes while b's listener runs late: b reads (a new key, so a local
    miss) after a's invalidation replaced the Redis token and before b applied
    its message, so only the token tells b about the write. Returns what b
    read then and what a reads once its write is acknowledged (b's fill drained)."""
    from services.reviews.app import CACHE_NAMESPACE

    cache = b.app[CACHE]
    key = f"{CACHE_NAMESPACE}:{cache._coherence.gen}:p:{product}"
    client = aioredis.Redis.from_url(redis.url)
    try:
        before = await client.hget(key, "_v")
        delay_listener(cache, 0.2)
        write = asyncio.create_task(post_review(a, product, summary))
        for _ in range(1000):  # until the invalidation script has run
            if await client.hget(key, "_v") != before:
                break
            await asyncio.sleep(0.002)
        during = await summaries(b, product, count=11)
        await write
        assert await cache.drain()
        after = await summaries(a, product, count=11)
    finally:
        await client.aclose()
    return during, after


def delay_listener(cache, seconds: float) -> None:
    """This process handles each pub/sub message `seconds` late (as
    tests/common/test_cache.py does): a busy process."""
    coherence = cache._coherence
    handle = coherence.handle_message

    async def delayed(message: dict) -> None:
        await asyncio.sleep(seconds)
        await handle(message)

    coherence.handle_message = delayed


async def test_the_lsn_in_the_redis_token_covers_a_message_not_yet_applied(
    aiohttp_client, pair: Pair, redis_server: RedisServer
) -> None:
    await fresh(pair, redis_server)
    a = await make_app(aiohttp_client, pair, redis_server)
    b = await make_app(aiohttp_client, pair, redis_server)
    await post_review(a, 8, "old")
    await settle(pair, a, b)
    assert await summaries(b, 8) == {"old"}
    during, after = await token_race(a, b, redis_server, 8, "new")
    assert during == {"old", "new"}
    assert after == {"old", "new"}
    del b.app[CACHE]._coherence.handle_message  # b's listener on time again

    # Control: b ignoring the token's LSN reads the lagging replica and fills
    # Redis under the post-write token: a's acknowledged write is then missing
    # from a's own read, for the entry's whole TTL. (c caches its first miss:
    # under admission on second access a first miss fills nothing.)
    c = await make_app(aiohttp_client, pair, redis_server, cache_admit_on_second=False)
    await settle(pair, a, c)
    cache = c.app[CACHE]
    position = cache.read_position
    cache.read_position = lambda scope, token: position(scope, None)
    during, after = await token_race(a, c, redis_server, 8, "newer")
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


async def read_loop(client, stop: asyncio.Event, failures: list, product: int) -> int:
    """Misses on distinct keys until stopped; every failure kept."""
    n = 0
    while not stop.is_set():
        n += 1
        resp = await client.get(f"/reviews?product_id={product}&count={1 + n % 97}&page={n}")
        if resp.status != 200:
            failures.append((resp.status, await resp.text()))
        await asyncio.sleep(0.005)
    return n


async def test_a_stopped_replica_is_skipped_with_no_failed_request(
    aiohttp_client, pair: Pair, redis_server: RedisServer
) -> None:
    await fresh(pair, redis_server)
    client = await make_app(aiohttp_client, pair, redis_server)
    router = router_of(client)
    await post_review(client, 4, "x")
    await settle(pair, client)
    stop, failures = asyncio.Event(), []
    loop = asyncio.create_task(read_loop(client, stop, failures, 4))
    await asyncio.sleep(0.3)
    assert router.counts()["replica"] > 0
    stopped_at = time.monotonic()
    await asyncio.to_thread(pair.replica.stop, "fast")
    while router.replicas[0].up:
        assert time.monotonic() - stopped_at < 1.0, "a stopped replica still counted as up"
        await asyncio.sleep(0.01)
    skipped_after = time.monotonic() - stopped_at
    down = router.counts()["primary:replica_down"]
    await asyncio.sleep(0.3)
    assert router.counts()["primary:replica_down"] > down
    await asyncio.to_thread(pair.replica.start)
    await settle(pair, client, timeout_s=15)
    on_replica = router.counts()["replica"]
    await asyncio.sleep(0.3)
    stop.set()
    reads = await loop
    assert router.counts()["replica"] > on_replica, "the replica did not come back"
    assert failures == []
    record_figures(
        "replicas[stopped]",
        {"reads": reads, "skipped_after_s": round(skipped_after, 3), **router.counts()},
    )


def replica_processes(replica: Replica) -> list[int]:
    """The replica's postmaster and every process it started."""
    main = int((replica.data / "postmaster.pid").read_text().splitlines()[0])
    found = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True)
    return [main, *(int(pid) for pid in found.stdout.split())]


async def timed_read_loop(client, stop: asyncio.Event, failures: list, product: int) -> list:
    latencies = []
    n = 0
    while not stop.is_set():
        n += 1
        started = time.monotonic()
        resp = await client.get(f"/reviews?product_id={product}&count={1 + n % 97}&page={n}")
        latencies.append(time.monotonic() - started)
        if resp.status != 200:
            failures.append((resp.status, await resp.text()))
        await asyncio.sleep(0.005)
    return latencies


async def test_a_hung_replica_is_skipped_and_reads_on_it_fall_back_at_once(
    aiohttp_client, pair: Pair, redis_server: RedisServer
) -> None:
    """Every replica process stopped (SIGSTOP): the monitor's probe times out
    and marks it down, which also ends the reads stuck on it: they run on the
    primary then, not at their statement timeout (5 s)."""
    await fresh(pair, redis_server)
    client = await make_app(aiohttp_client, pair, redis_server)
    router = router_of(client)
    await post_review(client, 11, "x")
    await settle(pair, client)
    stop, failures = asyncio.Event(), []
    loop = asyncio.create_task(timed_read_loop(client, stop, failures, 11))
    await asyncio.sleep(0.3)
    pids = replica_processes(pair.replica)
    hung_at = time.monotonic()
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        while router.replicas[0].up:
            assert time.monotonic() - hung_at < 1.0, "a hung replica still counted as up"
            await asyncio.sleep(0.01)
        skipped_after = time.monotonic() - hung_at
        await asyncio.sleep(2.0)  # longer than the bound below: a stuck read would show
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    await settle(pair, client, timeout_s=15)
    stop.set()
    latencies = await loop
    assert failures == []
    slowest = max(latencies)
    record_figures(
        "replicas[hung]",
        {"reads": len(latencies), "skipped_after_s": round(skipped_after, 3),
         "slowest_read_s": round(slowest, 3), **router.counts()},
    )  # fmt: skip
    assert slowest < 1.5, f"a read waited {slowest:.2f} s on the hung replica"


async def test_a_replica_past_the_lag_bound_is_skipped(
    aiohttp_client, pair: Pair, redis_server: RedisServer
) -> None:
    await fresh(pair, redis_server)
    client = await make_app(aiohttp_client, pair, redis_server)
    router = router_of(client)
    await post_review(client, 5, "x")
    await settle(pair, client)
    await asyncio.to_thread(pair.set_delay, 2500)
    try:
        await post_review(client, 6, "lagging")  # the replica applies it 2.5 s late
        written = time.monotonic()
        while router.replicas[0].fresh:
            assert time.monotonic() - written < 2.0, "a replica 2.5 s behind was not skipped"
            await asyncio.sleep(0.01)
        skipped_after = time.monotonic() - written
        lagging = router.counts()["primary:replica_lagging"]
        assert await summaries(client, 5, count=9) == {"x"}  # another scope: still the primary
        assert router.counts()["primary:replica_lagging"] == lagging + 1
        await settle(pair, client, timeout_s=10)
        assert router.replicas[0].fresh
    finally:
        await asyncio.to_thread(pair.set_delay, REPLICA_DELAY_MS)
    record_figures("replicas[lagging]", {"skipped_after_s": round(skipped_after, 3)})
    assert skipped_after <= router.max_lag_s + 0.5


# (name, causal check on, replica delay ms, products, operations). The short
# lag lets many more reads reach the replica, on tighter races.
COHERENCE_RUNS = (
    ("causal", True, REPLICA_DELAY_MS, 8, 1500),
    ("causal-30ms", True, 30, 256, 1500),
    ("naive", False, REPLICA_DELAY_MS, 8, 500),
)


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
        apps = [await make_app(aiohttp_client, pair, redis_server, service) for _ in range(2)]
        await settle(pair, *apps, service=service)
        bases = [str(app.make_url("")).rstrip("/") for app in apps]
        model_class, first_product = MODELS[service]
        for name, causal, delay_ms, products, ops in COHERENCE_RUNS:
            await asyncio.to_thread(pair.set_delay, delay_ms)
            for app in apps:
                router_of(app).causal = causal
            model = model_class(first_product)
            model.products = list(range(first_product, first_product + products))
            before = sum(router_of(app).counts()["replica"] for app in apps)
            history = History()
            try:
                run = await run_clients(bases, model, ops, history)
            finally:
                await asyncio.to_thread(pair.set_delay, REPLICA_DELAY_MS)
            replica_reads = sum(router_of(app).counts()["replica"] for app in apps) - before
            figures[f"{service}:{name}"] = {
                "checks": history.checks,
                "violations": len(history.violations),
                "replica_reads": replica_reads,
                **run,
            }
            if causal:
                assert history.violations == [], history.violations[:5]
                assert replica_reads > 0, "no read reached the replica"
            else:
                assert history.violations, "naive replica reads: the checker saw nothing stale"
            first_product += 1000
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


async def test_primary_down_gives_503s_as_before(
    aiohttp_client, pair: Pair, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Last in this module: the private primary is stopped (immediate: no
    shutdown checkpoint, as a crash) and started again; the write acknowledged
    before is there after the restart, the refused one is not."""
    await fresh(pair, redis_server)
    client = await make_app(aiohttp_client, pair, redis_server)
    await post_review(client, 7, "x")
    await settle(pair, client)
    await asyncio.to_thread(pair.primary.stop, "immediate")
    restarted = False
    try:
        started = time.monotonic()
        resp = await client.post("/reviews", json={**NEW, "product_id": 7, "summary": "y"})
        assert resp.status == 503
        assert list(json.loads(await resp.text())) == ["error"]
        assert time.monotonic() - started < 2.0
        statuses = set()
        for count in range(2, 12):
            resp = await client.get(f"/reviews?product_id=7&count={count}")
            statuses.add(resp.status)
            await asyncio.sleep(0.15)
        assert statuses <= {200, 503}
        assert 503 in statuses, "reads kept succeeding with the primary down past the lag bound"
        await asyncio.to_thread(pair.primary.start)
        restarted = True
        conn = await asyncpg.connect(pair.dsns["reviews"])
        try:
            kept = await conn.fetch("SELECT summary FROM reviews WHERE product_id = 7")
        finally:
            await conn.close()
        assert sorted(r["summary"] for r in kept) == ["x"]
    finally:
        if not restarted:
            await asyncio.to_thread(pair.primary.start)
