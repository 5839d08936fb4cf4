"""Postgres restarted under load, on a private cluster (never the machine's
shared one): stopped as a crash would stop it (`-m immediate`), kept down a few
seconds, started again. While it is down every request either still succeeds
(a cached read) or fails fast with a 503 JSON error; the service recovers by
itself; every write acknowledged before, during or after is in the database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.gateway.harness import ServiceInstance, free_instance_base
from tests.reliability.harness import fresh_database, record_figures
from tests.reliability.load import (
    Load,
    Outcome,
    acknowledged_markers,
    acknowledged_updates,
    between,
    summary,
)
from tests.reliability.pgcluster import PgCluster, postgres_bin
from tests.reliability.workloads import workload

WARM_S = 1.0
OUTAGE_S = 3.0
AFTER_S = 2.0
FAIL_FAST_S = 1.0  # the contract: a 503 within about a second, no hang
RECOVERY_BOUND_S = 5.0


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PgCluster]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no Postgres server binaries (initdb) installed: cannot run a private cluster")
    cluster = PgCluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def is_503_json(o: Outcome) -> bool:
    if o.status != 503 or o.content_type != "application/json":
        return False
    body = json.loads(o.body)
    return list(body) == ["error"] and bool(body["error"])


def recovery_seconds(outcomes: list[Outcome], t_back: float) -> float:
    """From Postgres answering again to the start of the first request after
    which nothing failed (0 when nothing failed after it returned)."""
    last_failure = max((o.start for o in outcomes if not o.ok and o.start >= t_back), default=None)
    return 0.0 if last_failure is None else last_failure - t_back


async def restart_under_load(pg: PgCluster, base: str, mix) -> dict:
    async with Load([base], mix.pick, workers=20) as load:
        await asyncio.sleep(WARM_S)
        t_down = time.monotonic()
        await asyncio.to_thread(pg.stop, "immediate")
        await asyncio.sleep(OUTAGE_S)
        t_start = time.monotonic()
        await asyncio.to_thread(pg.start)
        t_back = time.monotonic()
        await asyncio.sleep(AFTER_S)
    return {"outcomes": load.outcomes, "t_down": t_down, "t_start": t_start, "t_back": t_back}


@pytest.mark.parametrize("service", ["reviews", "qa", "overview"])
async def test_postgres_restart_under_load(
    private_postgres: PgCluster, redis_server: RedisServer, tmp_path: Path, service: str
) -> None:
    dsn = await asyncio.to_thread(fresh_database, service, "pg", private_postgres.admin_url)
    env = {
        f"{service.upper()}_DATABASE_URL": dsn,
        "REDIS_URL": redis_server.url,
        "DB_POOL_MIN": "2",
        "DB_POOL_MAX": "4",
    }
    instance = ServiceInstance(service, free_instance_base(1), env, tmp_path / "service.log")
    await asyncio.to_thread(instance.start)
    try:
        base = f"http://127.0.0.1:{instance.port}"
        mix = workload(service)
        await mix.seed(base, dsn)
        run = await restart_under_load(private_postgres, base, mix)
    finally:
        await asyncio.to_thread(instance.stop)
    outcomes: list[Outcome] = run["outcomes"]
    outage = between(outcomes, run["t_down"], run["t_back"])
    refused = [o for o in outage if not o.ok]
    markers = acknowledged_markers(outcomes)
    missing = await mix.missing(dsn, markers)
    updates = acknowledged_updates(outcomes)
    stored = await mix.counters(dsn, list(updates))
    recovery_s = recovery_seconds(outcomes, run["t_back"])
    record_figures(
        f"postgres_restart[{service}]",
        {
            "before": summary(between(outcomes, 0, run["t_down"])),
            "outage": summary(outage),
            "after": summary(between(outcomes, run["t_back"], float("inf"))),
            "outage_s": round(run["t_back"] - run["t_down"], 2),
            "refused_max_ms": round(max((o.latency for o in refused), default=0) * 1000, 1),
            "recovery_s": round(recovery_s, 3),
            "acknowledged_writes": len(markers) + sum(updates.values()),
            "missing": len(missing),
        },
    )
    assert len(refused) > 10, "the outage was not felt: did Postgres stop?"
    wrong = [o.describe() for o in outcomes if not o.ok and not is_503_json(o)]
    assert wrong == [], f"failures other than a 503 JSON error: {wrong[:10]}"
    slow = [o.describe() for o in refused if o.latency > FAIL_FAST_S]
    assert slow == [], f"503s slower than {FAIL_FAST_S}s: {slow[:10]}"
    assert recovery_s <= RECOVERY_BOUND_S
    assert len(between(outcomes, run["t_back"] + recovery_s + 0.01, float("inf"))) > 50
    assert missing == set(), f"{len(missing)} acknowledged writes lost"
    short = {k: (stored.get(k), n) for k, n in updates.items() if (stored.get(k) or 0) < n}
    assert short == {}, "counters below their acknowledged increments (stored, acknowledged)"
