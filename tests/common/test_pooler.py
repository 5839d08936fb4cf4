"""A service behind PgBouncer in transaction mode (DB_POOLER=transaction,
services/common/db.py create_pool): served routes work across many requests
though each transaction may land on another server connection (two here, so a
named prepared statement would go missing), statement_timeout applies through the pooler (it
comes from the app role's settings, not startup parameters), and the serving
role reads and writes but runs no DDL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import pytest

from infra.pgbouncer import PgBouncer, Sizing, binary, server_of
from services.common.db import create_pool, drop_database, migration_files, with_database
from services.common.migrate import migrate_service, migrations_dir
from services.common.resources import DB
from services.reviews.app import create_app
from tests.conftest import PG_ADMIN_URL, free_port, settings_for

TIMEOUT_MS = 400
ALL = [p.stem for p in migration_files(migrations_dir("reviews"))]

pytestmark = pytest.mark.skipif(binary() is None, reason="pgbouncer not installed (make deps)")


@pytest.fixture(scope="module")
def bouncer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    """Two server connections per database, shared by every client: a
    statement prepared on one is missing on the other."""
    server, user, password = server_of(PG_ADMIN_URL)
    b = PgBouncer(
        tmp_path_factory.mktemp("pgbouncer"),
        free_port(),
        replace(server, dbname=None),
        users={user: password, "runway_reviews": ""},
        size=Sizing(max_client_conn=100, default_pool_size=2, reserve_pool_size=0),
    )
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def pooled_db(bouncer: PgBouncer) -> Iterator[tuple[str, str]]:
    """(direct URL as postgres, pooled URL as the app role) of a migrated
    reviews database whose app role has a short statement_timeout."""
    name = f"runway_test_pooler_{os.getpid()}"
    direct = with_database(PG_ADMIN_URL, name)
    asyncio.run(drop_database(direct))
    env = {"DB_STATEMENT_TIMEOUT_MS": str(TIMEOUT_MS)}
    asyncio.run(migrate_service("reviews", direct, env=env))
    yield direct, bouncer.url(name, user="runway_reviews")
    asyncio.run(drop_database(direct))


@pytest.fixture
async def app_client(aiohttp_client, pooled_db, redis_server) -> AsyncIterator:
    direct, pooled = pooled_db
    conn = await asyncpg.connect(direct)
    await conn.execute("TRUNCATE reviews, reviews_photos, characteristics, characteristic_reviews")
    await conn.close()
    redis_server.flush()
    settings = settings_for("reviews", pooled, redis_server.url, db_pooler="transaction")
    settings = replace(settings, statement_timeout_ms=TIMEOUT_MS, cache_enabled=False)
    yield await aiohttp_client(create_app(settings))


async def test_named_statements_do_break_behind_the_pooler(pooled_db) -> None:
    """The control: asyncpg's default statement cache through the pooler."""
    _, pooled = pooled_db
    conns = [await asyncpg.connect(pooled) for _ in range(4)]
    try:
        results = []
        for _ in range(20):
            queries = [c.fetchval("SELECT count(*) FROM reviews WHERE id > $1", 0) for c in conns]
            results += await asyncio.gather(*queries, return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        assert errors, "named statements survived the pooler"
        assert all(isinstance(e, asyncpg.InvalidSQLStatementNameError) for e in errors), errors
        assert "does not exist" in str(errors[0])
    finally:
        for c in conns:
            await c.close()
    # The same through unnamed statements (statement_cache_size=0): no error.
    conns = [await asyncpg.connect(pooled, statement_cache_size=0) for _ in range(4)]
    try:
        for _ in range(20):
            queries = [c.fetchval("SELECT count(*) FROM reviews WHERE id > $1", 0) for c in conns]
            assert await asyncio.gather(*queries) == [0] * 4
    finally:
        for c in conns:
            await c.close()


async def test_timeouts_as_startup_parameters_are_refused_by_the_pooler(
    pooled_db, redis_server
) -> None:
    _, pooled = pooled_db
    settings = settings_for("reviews", pooled, redis_server.url, db_pooler="none")
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
        pool = await create_pool(settings)
        await pool.close()


async def test_a_served_route_works_across_many_requests(app_client, pooled_db) -> None:
    for i in range(60):
        product = 1 + i % 7
        body = {
            "product_id": product,
            "rating": 1 + i % 5,
            "summary": "Fits",
            "body": "A long enough body for a review, well over fifty characters in all.",
            "recommend": True,
            "name": "tester",
            "email": "tester@example.com",
            "photos": [f"https://example.com/{i}.jpg"],
            "characteristics": {},
        }
        resp = await app_client.post("/reviews", json=body)
        assert resp.status == 201, await resp.text()
    # Reads, concurrent: every pooled connection shares the one server connection.
    for _ in range(5):
        gets = [app_client.get(f"/reviews/?product_id={p}&count=100") for p in range(1, 8)]
        gets += [app_client.get(f"/reviews/meta?product_id={p}") for p in range(1, 8)]
        for resp in await asyncio.gather(*gets):
            assert resp.status == 200, await resp.text()
    resp = await app_client.get("/reviews/?product_id=1&count=100")
    assert len((await resp.json())["results"]) == 9
    assert (await app_client.get("/readyz")).status == 200


async def test_statement_timeout_applies_through_the_pooler(app_client) -> None:
    db = app_client.app[DB]
    assert await db.fetchval("SHOW statement_timeout") == f"{TIMEOUT_MS}ms"
    assert await db.fetchval("SELECT current_user") == "runway_reviews"
    with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
        await db.fetchval("SELECT pg_sleep(2)")
    assert await db.fetchval("SELECT 1") == 1  # the pool and the pooler carry on


async def test_the_serving_role_reads_and_writes_but_runs_no_ddl(app_client) -> None:
    db = app_client.app[DB]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.fetchval("CREATE TABLE intruder (i int)")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.fetchval("DROP TABLE reviews")
    body = {
        "product_id": 3,
        "rating": 5,
        "summary": "ok",
        "body": "A long enough body for a review, well over fifty characters in all.",
        "recommend": False,
        "name": "n",
        "email": "n@example.com",
        "photos": [],
        "characteristics": {},
    }
    assert (await app_client.post("/reviews", json=body)).status == 201
    resp = await app_client.get("/reviews/?product_id=3")
    [review] = (await resp.json())["results"]
    assert (await app_client.put(f"/reviews/{review['review_id']}/helpful")).status == 204


async def test_migrations_hold_through_the_pooler(bouncer: PgBouncer) -> None:
    """db.migrate's transaction-level lock: racing migrators through the pooler
    (a session-level advisory lock would be taken and released on different
    server connections there)."""
    from services.common.db import ensure_database, migrate

    name = f"runway_test_pooler_migrate_{os.getpid()}"
    direct = with_database(PG_ADMIN_URL, name)
    await drop_database(direct)
    await ensure_database(direct)
    conns = [await asyncpg.connect(bouncer.url(name), statement_cache_size=0) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c, migrations_dir("reviews")) for c in conns))
        assert sorted(v for r in results for v in r) == ALL
    finally:
        for c in conns:
            await c.close()
        await drop_database(direct)
