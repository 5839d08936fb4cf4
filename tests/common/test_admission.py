"""Admission on second access (services/common/cache/admission.py): a key's
first miss is answered from the database alone (no Redis read) and cached
nowhere; from its second miss on it reads Redis, fills both tiers and shares
loads as before. Against a real Redis,
with two caches standing for two processes."""

from __future__ import annotations

import asyncio

from services.common.cache.admission import Doorkeeper
from tests.common.cache_harness import FakeDatabase, make_cache


def test_a_key_is_admitted_from_its_second_miss() -> None:
    keeper = Doorkeeper(capacity=8)
    assert not keeper.admit("p:1", "k")
    assert keeper.admit("p:1", "k")
    assert not keeper.admit("p:1", "other")  # the key, not the scope
    assert not keeper.admit("p:2", "k")


def test_the_doorkeeper_forgets_after_two_periods_and_stays_bounded() -> None:
    keeper = Doorkeeper(capacity=4)
    assert not keeper.admit("p:0", "k")
    for i in range(1, 4):  # the period fills up: the set rotates
        assert not keeper.admit(f"p:{i}", "k")
    assert keeper.admit("p:0", "k")  # still remembered from the previous period
    for i in range(10, 18):  # two more periods of first misses
        assert not keeper.admit(f"p:{i}", "k")
    assert not keeper.admit("p:1", "k")  # forgotten
    assert len(keeper._current) + len(keeper._previous) <= 8


async def test_a_first_miss_fills_neither_tier(redis_server) -> None:
    redis_server.flush()
    a = make_cache(redis_server.url, admit_on_second_access=True)
    b = make_cache(redis_server.url, admit_on_second_access=True)
    for cache in (a, b):
        await cache.start()
        assert await cache.wait_ready()
    try:
        db = FakeDatabase()
        assert await a.lookup("p:1", "k", db.load) == (b"v1", "db")
        assert await a.drain()
        assert a._local_tier.held_bytes == 0
        # Another process's first miss does not ask Redis (nothing there
        # anyway): it loads too.
        assert await b.lookup("p:1", "k", db.load) == (b"v1", "db")
        assert db.reads == 2
        # a's second miss is admitted: it loads and fills both tiers.
        assert await a.lookup("p:1", "k", db.load) == (b"v1", "db")
        assert await a.drain()
        assert await a.lookup("p:1", "k", db.load) == (b"v1", "local")
        assert await b.lookup("p:1", "k", db.load) == (b"v1", "redis")
        assert db.reads == 3
        # An admitted key stays admitted across an invalidation: the next
        # miss after a write fills again.
        db.value = b"v2"
        await a.invalidate("p:1")
        assert await a.lookup("p:1", "k", db.load) == (b"v2", "db")
        assert await a.drain()
        assert await a.lookup("p:1", "k", db.load) == (b"v2", "local")
    finally:
        for cache in (a, b):
            await cache.stop()
            await cache._redis.aclose()


async def test_a_burst_on_a_new_key_loads_at_most_twice(redis_server) -> None:
    """The first miss loads alone; the misses behind it are admitted and
    share one load (single-flight), however many they are."""
    redis_server.flush()
    a = make_cache(redis_server.url, admit_on_second_access=True)
    await a.start()
    assert await a.wait_ready()
    try:
        db = FakeDatabase()
        db.gate = asyncio.Event()
        readers = [asyncio.ensure_future(a.lookup("p:2", "k", db.load)) for _ in range(6)]
        await db.reads_reach(2)
        db.gate.set()
        found = await asyncio.gather(*readers)
        assert db.reads == 2
        assert sorted(source for _, source in found) == ["db", "db"] + ["shared"] * 4
        assert {body for body, _ in found} == {b"v1"}
    finally:
        await a.stop()
        await a._redis.aclose()


async def test_a_service_caches_a_page_from_its_second_read(service_client, reviews_db) -> None:
    """The services' default (CACHE_ADMIT_ON=second), through a view: the
    first read of a page comes from the database and leaves nothing cached,
    the second fills, the third is a local hit (X-Cache names the source)."""
    client = await service_client(
        "reviews", reviews_db, wait_cache=True, cache_admit_on_second=True
    )
    sources = []
    for _ in range(3):
        resp = await client.get("/reviews/meta?product_id=4242")
        assert resp.status == 200
        sources.append(resp.headers["X-Cache"])
    assert sources == ["db", "db", "local"]
