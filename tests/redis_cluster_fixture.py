"""The `redis_cluster` fixture: a Redis Cluster of the tests' own (3 primaries
+ 3 replicas, infra/redis_cluster_subprocesses.py) on free ports, never the machine's Redis.

Use it from a test module with

    from tests.redis_cluster_fixture import redis_cluster  # noqa: F401

It is module-scoped (about 2 s to start): a test that kills a node calls
`redis_cluster.heal()` afterwards (the dead nodes restart and rejoin as
replicas; it returns once every node is ok), one that needs an empty cache
`redis_cluster.flushall()`. `redis_cluster.seed_url()` is what a service's
REDIS_URL would be (with REDIS_CLUSTER=1). Each node's bus port is a free port
of its own (the default, port + 10000, may be taken or out of range)."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from infra.redis_cluster import NODE_TIMEOUT_MS
from infra.redis_cluster_subprocesses import Cluster


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (held open together while picked)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int, bus_offset: int = 10000) -> int:
    """A base port with base..base+count-1 free, and their default cluster bus
    ports (+10000) too: for what, like the local stack, takes consecutive ports."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        ports = range(base, base + count)
        if all(_bindable(p) and _bindable(p + bus_offset) for p in ports):
            return base
    raise RuntimeError(f"no block of {count} free ports found")


def start_cluster(root, primaries: int = 3, node_timeout_ms: int = NODE_TIMEOUT_MS) -> Cluster:
    picked = free_ports(4 * primaries)
    ports, buses = picked[: 2 * primaries], picked[2 * primaries :]
    cluster = Cluster(
        root,
        tuple(ports),
        replicas=1,
        node_timeout_ms=node_timeout_ms,
        bus_ports=dict(zip(ports, buses, strict=True)),
    )
    cluster.start()
    return cluster


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()
