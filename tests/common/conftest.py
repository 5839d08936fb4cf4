"""The `caches` fixture of the cache's mechanism tests: two caches on one
namespace (two service processes as far as Redis can tell), on one Redis and
on a Redis Cluster of 3 primaries + 3 replicas (the module-scoped
`redis_cluster` fixture, imported here for every module in this folder)."""

from __future__ import annotations

import pytest

from tests.common.cache_harness import make_cache
from tests.redis_cluster_fixture import redis_cluster  # noqa: F401


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
