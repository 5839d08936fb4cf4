"""The migrate step (services/common/migrate.py) and the serving side's schema
check (db.require_schema): the step creates the database, applies each file
once even with migrators racing, and leaves the app role DML rights only with
its timeouts as role settings; a serving process refuses an older schema."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from services.common.db import (
    SchemaNotReady,
    drop_database,
    migrate,
    migration_files,
    with_database,
)
from services.common.migrate import AppRole, app_role, main, migrate_service, migrations_dir
from services.reviews.app import create_app
from tests.conftest import PG_ADMIN_URL, ROOT, settings_for

ALL = [p.stem for p in migration_files(migrations_dir("reviews"))]


@pytest.fixture
async def fresh_db() -> str:
    url = with_database(PG_ADMIN_URL, f"runway_test_migrate_{os.getpid()}")
    await drop_database(url)
    yield url
    await drop_database(url)


def as_role(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


async def test_migrate_creates_applies_once_and_grants_dml_only(fresh_db: str) -> None:
    env = {"DB_STATEMENT_TIMEOUT_MS": "1500"}
    first = await migrate_service("reviews", fresh_db, env=env)
    assert first.applied == ALL and first.version == ALL[-1]
    assert first.role == AppRole("runway_reviews", None, 1500)
    again = await migrate_service("reviews", fresh_db, env=env)
    assert again.applied == [] and again.version == ALL[-1]

    app = await asyncpg.connect(as_role(fresh_db, "runway_reviews"))
    try:
        # The session settings are the role's settings in this database (no startup parameters).
        assert await app.fetchval("SHOW statement_timeout") == "1500ms"
        assert await app.fetchval("SHOW idle_in_transaction_session_timeout") == "10s"
        assert await app.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        assert await app.fetchval("SHOW jit") == "off"
        pid = await app.fetchval(
            "INSERT INTO reviews (product_id, rating, summary, body, recommend, reviewer_name,"
            " reviewer_email) VALUES (1, 5, 's', 'b', true, 'n', 'e') RETURNING id"
        )
        assert await app.fetchval("SELECT count(*) FROM reviews") == 1
        await app.execute("UPDATE reviews SET helpfulness = helpfulness + 1 WHERE id = $1", pid)
        await app.execute("DELETE FROM reviews WHERE id = $1", pid)
        for ddl in (
            "CREATE TABLE intruder (i int)",
            "DROP TABLE reviews",
            "ALTER TABLE reviews ADD COLUMN x int",
            "TRUNCATE reviews",
            "DELETE FROM schema_migrations WHERE false; CREATE INDEX ix ON reviews (id)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.execute(ddl)
    finally:
        await app.close()


async def test_racing_migrators_apply_each_file_once(fresh_db: str) -> None:
    from services.common.db import ensure_database

    await ensure_database(fresh_db)
    conns = [await asyncpg.connect(fresh_db) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c, migrations_dir("reviews")) for c in conns))
        assert sorted(v for r in results for v in r) == ALL
        rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == ALL
    finally:
        for c in conns:
            await c.close()


def test_app_role_choice() -> None:
    direct = "postgresql://admin:password@db:5432/atelier_qa"
    serving = "postgresql://qa_app:secret@db:5432/atelier_qa"
    # Serving as another user than the migrator: that user is the app role.
    env = {"QA_MIGRATE_DATABASE_URL": direct, "QA_DATABASE_URL": serving}
    assert app_role("qa", env) == AppRole("qa_app", "secret", 5000)
    # One URL for both: a role of its own, its password left alone.
    assert app_role("qa", {"QA_DATABASE_URL": direct}).name == "runway_qa"
    assert app_role("qa", {"QA_DATABASE_URL": direct}).password is None
    assert app_role("qa", {**env, "RUNWAY_APP_ROLE": "svc"}) == AppRole("svc", None, 5000)


async def serve(url: str, redis_url: str) -> None:
    """Start and stop the reviews app's resources (what the process does first)."""
    app = create_app(settings_for("reviews", url, redis_url))
    from aiohttp.test_utils import TestServer

    server = TestServer(app)
    await server.start_server()
    await server.close()


async def test_serving_refuses_an_older_schema(fresh_db: str, tmp_path: Path, redis_server) -> None:
    with pytest.raises(SchemaNotReady, match="does not exist: run `make migrate`"):
        await serve(fresh_db, redis_server.url)
    # Only the first migration applied: an older schema.
    shutil.copy(migrations_dir("reviews") / f"{ALL[0]}.sql", tmp_path)
    from services.common.db import prepare_database

    await prepare_database(fresh_db, tmp_path)
    name = fresh_db.rsplit("/", 1)[1]
    expected = f"database {name} is at schema 001, this build needs {ALL[-1][:3]}"
    with pytest.raises(SchemaNotReady, match=expected) as caught:
        await serve(fresh_db, redis_server.url)
    assert "run `make migrate`" in str(caught.value)
    # The process exits with that message, and ran no DDL.
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.reviews.app"],
        cwd=ROOT,
        env={**os.environ, "REVIEWS_DATABASE_URL": fresh_db, "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 1
    finally:
        await conn.close()
    # Migrated: it starts.
    await migrate_service("reviews", fresh_db, env={})
    await serve(fresh_db, redis_server.url)


def test_the_command_migrates_the_named_services(fresh_db: str, capsys) -> None:
    os.environ["REVIEWS_MIGRATE_DATABASE_URL"] = fresh_db
    try:
        main(["reviews"])
    finally:
        del os.environ["REVIEWS_MIGRATE_DATABASE_URL"]
    out = capsys.readouterr().out
    assert f"reviews: {fresh_db.rsplit('/', 1)[1]} at {ALL[-1]}" in out
    assert "app role runway_reviews: DML only" in out
    with pytest.raises(SystemExit):
        main(["nosuch"])
