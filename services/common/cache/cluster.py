"""The cache's commands on a Redis Cluster (REDIS_CLUSTER=1).

A scope's hash is one key, so it lives on one slot; the namespace's own keys
and channel share the slot of `{ns}` (scripts.py). Every script call here
touches one slot: a batch of reads and fills is split per slot, one script
call per slot, pipelined per node (one round trip per node, concurrently).

Invariants:

* An invalidation's token writes are acknowledged by a replica (`WAIT 1`,
  on the connection that wrote them) before the message is published and the
  writer replies; if a replica does not confirm in time the invalidation
  raises (a Redis failure: replayed, and the writer waits out the lease).
  So a failover that promotes a replica loses no acknowledged token write:
  the Redis tier after it is cold or fresh, never stale.
* Same for a flush's generation (`replicated`).
* Any cluster error (MOVED during a failover, CLUSTERDOWN, TRYAGAIN, a node
  gone) is raised as a Redis failure (resilience._REDIS_FAILURES): fail-open.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import defaultdict
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from .scripts import FILL_THEN_READ_SCRIPT, READ_SCRIPT, LuaScript

REFRESH_EVERY_S = 0.5  # at most this often, a failure refreshes the slot map


class NotReplicated(RedisError):
    """WAIT returned before a replica acknowledged the writes."""


_node_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_refreshed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Per node (name): how many replicas it had at its last invalidation (ROLE).
# WAIT asks for min(1, that): a primary without any replica has nothing a
# failover could promote, and waiting for one would fail every write.
_replicas: dict[str, int] = {}


def _client_for(redis, node) -> Redis:
    """A plain client of the node (one per cluster client and node): a
    pipeline on it runs on one connection, so WAIT covers its writes."""
    clients = _node_clients.setdefault(redis, {})
    client = clients.get(node.name)
    if client is None:
        client = clients[node.name] = Redis(
            host=node.host, port=int(node.port), socket_timeout=None, max_connections=64
        )
    return client


async def close_node_clients(redis) -> None:
    clients = _node_clients.pop(redis, {})
    for client in clients.values():
        try:
            async with asyncio.timeout(1.0):
                await client.aclose()
        except Exception:  # closing a dead node's client: nothing to keep
            pass


async def refresh(redis) -> None:
    """Ask the cluster for its slot map again (after a failure, throttled)."""
    now = time.monotonic()
    if now - _refreshed.get(redis, 0.0) < REFRESH_EVERY_S:
        return
    _refreshed[redis] = now
    try:
        async with asyncio.timeout(0.5):
            await redis.nodes_manager.initialize()
    except Exception:  # the next failure tries again
        pass


def _node(redis, slot: int):
    return redis.nodes_manager.get_node_from_slot(slot)


async def _run_on_node(redis, node, commands: list[tuple], wait_ms: int | None) -> list:
    client = _client_for(redis, node)
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    wanted = min(1, _replicas.get(node.name, 1))
    if wait_ms is not None:
        pipe.execute_command("ROLE")
        pipe.execute_command("WAIT", wanted, wait_ms)
    results = await pipe.execute(raise_on_error=True)
    if wait_ms is None:
        return results
    role, acked = results[-2], int(results[-1])
    if role[0] not in (b"master", "master"):
        raise NotReplicated(f"{node.name} is no longer a primary")
    _replicas[node.name] = len(role[2])
    if acked < wanted:
        raise NotReplicated(f"{node.name}: no replica acknowledged within {wait_ms} ms")
    return results[:-2]


async def _per_node(redis, by_slot: dict[int, list[tuple]], wait_ms: int | None) -> dict:
    """Run each slot's commands, pipelined per node, nodes concurrently.
    Returns {slot: [results]}; raises the first failure."""
    by_node: dict = {}
    for slot, commands in by_slot.items():
        node = _node(redis, slot)
        by_node.setdefault(node.name, (node, []))[1].append((slot, commands))
    jobs = []
    for node, groups in by_node.values():
        flat = [command for _, commands in groups for command in commands]
        jobs.append(_run_on_node(redis, node, flat, wait_ms))
    try:
        done = await asyncio.gather(*jobs)
    except (RedisError, OSError, ResponseError):
        await refresh(redis)
        raise
    out: dict[int, list] = {}
    for (_, groups), results in zip(by_node.values(), done, strict=True):
        i = 0
        for slot, commands in groups:
            out[slot] = results[i : i + len(commands)]
            i += len(commands)
    return out


async def invalidate(
    redis,
    script: LuaScript,
    keys: Sequence[str],
    token: str,
    ttl: int,
    channel: str,
    body: bytes,
    timeout_s: float,
) -> None:
    """Token writes per scope (one script call each, pipelined per node, each
    node's followed by WAIT 1), then the message on the sharded channel."""
    wait_ms = max(int(timeout_s * 1000 / 2), 1)
    by_slot: dict[int, list[tuple]] = defaultdict(list)
    for key in keys:
        by_slot[key_slot(key.encode())].append(("EVAL", script.source, 1, key, token, ttl))
    if by_slot:
        await _per_node(redis, by_slot, wait_ms)
    slot = key_slot(channel.encode())
    await _per_node(redis, {slot: [("SPUBLISH", channel, body)]}, None)


async def replicated(redis, key: str, timeout_s: float) -> None:
    """Raise unless the latest writes to `key`'s node reach a replica: a WAIT
    on the connection that wrote them is not available through the cluster
    client, so the key is written again (SET to its own value) with WAIT."""
    slot = key_slot(key.encode())
    script = "local v = redis.call('GET', KEYS[1]); if v then redis.call('SET', KEYS[1], v) end"
    await _per_node(redis, {slot: [("EVAL", script, 1, key)]}, max(int(timeout_s * 1000), 1))


_FILL_THEN_READ = FILL_THEN_READ_SCRIPT
_READ = READ_SCRIPT


async def run_batch(redis, fills: list, reads: list) -> list:
    """A batch of fills and reads, one script call per slot (fills first, as
    on one Redis), pipelined per node. Returns the reads' [token, body]."""
    groups: dict[int, tuple[list, list]] = defaultdict(lambda: ([], []))
    for fill in fills:
        groups[key_slot(fill[0].encode())][0].append(fill)
    for i, (redis_key, key, _) in enumerate(reads):
        groups[key_slot(redis_key.encode())][1].append((i, redis_key, key))
    by_slot: dict[int, list[tuple]] = {}
    for slot, (slot_fills, slot_reads) in groups.items():
        hashes = [f[0] for f in slot_fills] + [r[1] for r in slot_reads]
        fields = [r[2] for r in slot_reads]
        if slot_fills:
            args: list[object] = [len(slot_fills)]
            for _, token, key, body, ttl in slot_fills:
                args += (token, key, body, ttl)
            by_slot[slot] = [("EVAL", _FILL_THEN_READ, len(hashes), *hashes, *args, *fields)]
        else:
            by_slot[slot] = [("EVAL", _READ, len(hashes), *hashes, *fields)]
    out = await _per_node(redis, by_slot, None)
    results: list = [None] * len(reads)
    for slot, (_, slot_reads) in groups.items():
        found = out[slot][0]
        for j, (i, _, _) in enumerate(slot_reads):
            results[i] = found[j]
    return results
