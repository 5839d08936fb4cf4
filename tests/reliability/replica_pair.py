"""A private Postgres primary with a streaming replica delayed by
REPLICA_DELAY_MS (so it certainly lags a write), never the machine's shared
Postgres, and the helpers the replica tests share: an app on the pair, its
router, waiting for the replica to catch up, writes and reads. Reads are
counted on the replica itself (its log, log_statement=all, by
application_name). The `pair` fixture (tests/reliability/conftest.py) builds
one per test module."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace

import asyncpg
import pytest

from infra.pg_replica import Replica, hot_standby_settings
from services.common.replicas import ReplicaRouter
from services.common.resources import CACHE, DB
from services.common.settings import Settings
from services.common.write_marker import COOKIE, HEADER
from tests.conftest import RedisServer, truncate_all
from tests.reliability.harness import fresh_database
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

    @contextlib.asynccontextmanager
    async def replay_paused(self) -> AsyncIterator[None]:
        """The replica applies no WAL record from now until the block ends
        (pg_wal_replay_pause: checked before each record it applies)."""
        conn = await asyncpg.connect(self.replica.dsn())
        try:
            await conn.execute("SELECT pg_wal_replay_pause()")
            yield
        finally:
            await conn.execute("SELECT pg_wal_replay_resume()")
            await conn.close()

    def set_delay(self, delay_ms: int) -> None:
        settings = asyncio.run(hot_standby_settings(self.primary.admin_url))
        self.replica.configure(delay_ms=delay_ms, settings={**settings, **LOGGING})
        self.replica._pg_ctl("reload")


LOGGING = {"log_statement": "all", "log_line_prefix": "%m [%p] app=%a db=%d "}


@contextlib.contextmanager
def running_pair() -> Iterator[Pair]:
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
