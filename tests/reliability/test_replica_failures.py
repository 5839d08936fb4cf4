"""Read replicas failing under reads (services/common/replicas.py), on a
private primary and a streaming replica (tests/reliability/replica_pair.py):
a stopped, a hung (SIGSTOP) and a lagging replica are skipped with no failed
request, and a stopped primary gives 503s and loses no acknowledged write."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from infra.pg_replica import Replica
from tests.conftest import RedisServer
from tests.reliability.harness import record_figures
from tests.reliability.replica_pair import (
    NEW,
    REPLICA_DELAY_MS,
    Pair,
    fresh,
    make_app,
    post_review,
    router_of,
    settle,
    summaries,
)


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
    await grows(lambda: router.counts()["replica"], "reads on the replica before")
    stopped_at = time.monotonic()
    await asyncio.to_thread(pair.replica.stop, "fast")
    while router.replicas[0].up:
        assert time.monotonic() - stopped_at < 1.0, "a stopped replica still counted as up"
        await asyncio.sleep(0.01)
    skipped_after = time.monotonic() - stopped_at
    await grows(lambda: router.counts()["primary:replica_down"], "reads on the primary meanwhile")
    await asyncio.to_thread(pair.replica.start)
    await settle(pair, client, timeout_s=15)
    await grows(lambda: router.counts()["replica"], "reads on the replica once it is back")
    stop.set()
    reads = await loop
    assert failures == []
    record_figures(
        "replicas[stopped]",
        {"reads": reads, "skipped_after_s": round(skipped_after, 3), **router.counts()},
    )


async def grows(count: Callable[[], int], what: str, timeout_s: float = 10) -> None:
    """Until `count()` is above its value now (the read loop got that far),
    polled every 10 ms; fails after `timeout_s`."""
    start, deadline = count(), time.monotonic() + timeout_s
    while count() <= start:
        assert time.monotonic() < deadline, f"no {what} in {timeout_s} s"
        await asyncio.sleep(0.01)


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
    await grows(lambda: router.counts()["replica"], "reads on the replica before")
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
