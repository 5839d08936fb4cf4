"""The cache's WAL-position bookkeeping for read replicas (cache/local.py,
cache/coherence.py): per-scope LSNs beside the invalidation sequences, the
floor that stands for evicted scopes and becomes unknown on a drop_all, and
the LSN riding with an invalidation to the other processes and into the
Redis token. The routing itself is tested against a real replica in
tests/reliability/test_replicas.py."""

from __future__ import annotations

from redis.asyncio import Redis

from services.common.cache import ResponseCache, local
from services.common.cache.local import LocalTier
from services.common.cache.scripts import scope_key
from services.common.metrics import Metrics
from services.common.replicas import ReplicaRouter


def tracking_tier() -> LocalTier:
    tier = LocalTier(1 << 20, Metrics("test"))
    tier.track_lsns()
    tier.note_primary_lsn(100, tier.drops)
    return tier


def test_positions_are_unknown_until_a_primary_reading_taken_after_the_drop() -> None:
    tier = LocalTier(1 << 20, Metrics("test"))
    tier.track_lsns()
    assert tier.required_lsn("p:1") is None
    sent_at = tier.drops
    tier.drop_all()  # while the reading was under way: it may predate a missed write
    tier.note_primary_lsn(100, sent_at)
    assert tier.required_lsn("p:1") is None
    tier.note_primary_lsn(120, tier.drops)
    assert tier.required_lsn("p:1") == 120


def test_an_invalidation_raises_its_scope_only_and_never_lowers_it() -> None:
    tier = tracking_tier()
    tier.drop(["p:1"], 500)
    tier.drop(["p:1"], 300)  # an older write's invalidation arriving late
    assert tier.required_lsn("p:1") == 500
    assert tier.required_lsn("p:2") == 100


def test_an_evicted_scope_s_position_folds_into_the_floor(monkeypatch) -> None:
    monkeypatch.setattr(local, "_SCOPE_SEQ_MAX", 3)
    tier = tracking_tier()
    tier.drop(["p:1"], 900)
    for i, scope in enumerate(["p:2", "p:3", "p:4"]):
        tier.drop([scope], 200 + i)
    assert "p:1" not in tier.scope_lsn and len(tier.scope_lsn) <= 3
    assert tier.required_lsn("p:1") == 900  # evicted, still covered
    assert tier.lsn_floor == 900


def test_a_drop_all_or_an_invalidation_without_a_position_makes_it_unknown() -> None:
    tier = tracking_tier()
    tier.drop(["p:1"], 500)
    tier.drop_all()
    assert tier.required_lsn("p:1") is None and tier.scope_lsn == {}
    tier.note_primary_lsn(600, tier.drops)
    tier.drop(["p:2"])  # a writer that could not read its LSN
    assert tier.required_lsn("p:1") is None


def test_without_replicas_no_position_is_kept() -> None:
    tier = LocalTier(1 << 20, Metrics("test"))
    tier.drop(["p:1"], 500)
    tier.drop(["p:2"])
    assert tier.scope_lsn == {} and tier.lsn_floor is None and not tier.tracks_lsns


async def test_the_position_rides_to_other_processes_and_into_the_redis_token(
    redis_server,
) -> None:
    redis_server.flush()

    def make() -> ResponseCache:
        return ResponseCache(
            Redis.from_url(redis_server.url, socket_timeout=None),
            "t",
            Metrics("test"),
            pubsub_factory=lambda: Redis.from_url(redis_server.url, socket_timeout=None),
            admit_on_second_access=False,  # every miss fills: the first read sets the scene
        )

    a, b = make(), make()
    for cache in (a, b):
        await cache.start()
        assert await cache.wait_ready()
        cache._local_tier.track_lsns()
        cache._local_tier.note_primary_lsn(100, cache._local_tier.drops)
    try:
        await a.invalidate("p:1", lsn=0x1234)
        assert await b.drain()  # b has applied the message (within the lease's bound)
        assert b._local_tier.required_lsn("p:1") == 0x1234
        assert a._local_tier.required_lsn("p:1") == 0x1234
        token = await a._redis.hget(scope_key("t", a._coherence.gen, "p:1"), "_v")
        assert token.decode().endswith("@1234")
        assert b.read_position("p:1", token.decode()) == 0x1234
        assert b.read_position("p:2", f"x@{0x99999:x}") == 0x99999
        await a.invalidate("p:2")  # no position: every process must ask the primary
        assert await b.drain()
        assert b.read_position("p:1", None) == "lsn_unknown"
    finally:
        for cache in (a, b):
            await cache.stop()
            await cache._redis.aclose()


def test_pick_checks_the_very_replica_it_chooses() -> None:
    """Stricter than "one replica caught up, so any will do" (GitLab's
    gitlab-org/gitlab#413203): a replica behind the position is never chosen,
    however far another has got; among those that qualify, round robin."""
    router = ReplicaRouter(
        None,  # type: ignore[arg-type]  # pick() never touches the primary
        "postgresql://primary/x",
        ["postgresql://a:5001/x", "postgresql://b:5002/x"],
        Metrics("test"),
        service="test",
        max_lag_s=1.0,
        statement_timeout_ms=1000,
        connect_timeout_s=1.0,
        pool_max=1,
    )
    a, b = router.replicas
    for replica, replay in ((a, 100), (b, 500)):
        replica.up = replica.fresh = True
        replica.replay = replay
    assert [router.pick(300) for _ in range(4)] == [b, b, b, b]
    assert [router.pick(50) for _ in range(4)] in ([a, b, a, b], [b, a, b, a])
    b.fresh = False
    assert router.pick(300) == "not_caught_up"
    a.up = False
    assert router.pick(50) == "replica_lagging"
    b.up = False
    assert router.pick(50) == "replica_down"
