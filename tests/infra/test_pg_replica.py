"""Streaming replicas (infra/pg_replica.py) and PgBouncer in transaction mode
(infra/pgbouncer.py) on real servers: a private primary (PgCluster, never the
machine's shared Postgres), a replica of it made with pg_basebackup behind a
300 ms apply delay, and a pgbouncer in front of the primary. Nothing is skipped:
a missing Postgres or pgbouncer fails (`make deps` installs them)."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from infra import pg_replica, pg_replica_stack, pgbouncer, stack
from tests.conftest import free_port
from tests.reliability.pgcluster import PgCluster, postgres_bin

DELAY_MS = 300


@pytest.fixture(scope="module")
def primary() -> Iterator[PgCluster]:
    bin_dir = postgres_bin()
    assert bin_dir is not None, "no Postgres server binaries (initdb): run `make deps`"
    cluster = PgCluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def replica(primary: PgCluster) -> Iterator[pg_replica.Replica]:
    made = asyncio.run(primary.replica(delay_ms=DELAY_MS))
    try:
        yield made
    finally:
        made.destroy()


def _postgres_owned_dir(prefix: str) -> Path:
    """A temporary directory user postgres can enter (pytest's tmp_path, under
    a root-only directory, is not when the tests run as root)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    pg_replica.give_to_postgres(directory)
    return directory


@pytest.fixture
def run_dir() -> Iterator[Path]:
    directory = _postgres_owned_dir("runway-run-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def bouncer(primary: PgCluster) -> Iterator[pgbouncer.PgBouncer]:
    assert pgbouncer.binary(), "pgbouncer missing: run `make deps`"
    directory = _postgres_owned_dir("runway-pgbouncer-")
    pooler = pgbouncer.PgBouncer(
        directory,
        free_port(),
        pgbouncer.Server("127.0.0.1", primary.port),
        users={"postgres": "", "runway_app": ""},
        size=pgbouncer.sizing(instances=1, services=1, client_pool_max=4),  # 2 servers
    )
    pooler.start()
    try:
        yield pooler
    finally:
        pooler.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def _val(dsn: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


# --- replicas --------------------------------------------------------------------


async def test_the_replica_is_a_delayed_hot_standby_streaming_from_the_primary(
    primary: PgCluster, replica: pg_replica.Replica
) -> None:
    assert await _val(replica.dsn(), "SELECT pg_is_in_recovery()") is True
    assert await _val(replica.dsn(), "SHOW recovery_min_apply_delay") == f"{DELAY_MS}ms"
    reading = await pg_replica.lag(primary.admin_url, replica.dsn(), replica.name)
    assert reading.state == "streaming"
    hba = [" ".join(x.split()) for x in (primary.data / "pg_hba.conf").read_text().splitlines()]
    assert pg_replica.HOST_REPLICATION in hba and pg_replica.LOCAL_REPLICATION in hba


async def test_a_row_reaches_the_replica_only_once_replay_reaches_the_primary_lsn(
    primary: PgCluster, replica: pg_replica.Replica
) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(primary.admin_url)
    rconn = await asyncpg.connect(replica.dsn())
    try:
        await conn.execute(f"CREATE TABLE {table} (id int)")
        await pg_replica.wait_for_replay(
            replica.dsn(), await pg_replica.current_lsn(primary.admin_url)
        )

        await conn.execute(f"INSERT INTO {table} VALUES (1)")
        committed = time.monotonic()
        lsn = await pg_replica.current_lsn(primary.admin_url)
        # Received, not yet applied: not visible, and the lag reading says so.
        assert await rconn.fetchval(f"SELECT count(*) FROM {table}") == 0
        during = await pg_replica.lag(primary.admin_url, replica.dsn(), replica.name)
        assert during.bytes is not None and during.bytes > 0, during

        await pg_replica.wait_for_replay(replica.dsn(), lsn, timeout_s=10)
        assert time.monotonic() - committed >= (DELAY_MS - 50) / 1000
        assert await rconn.fetchval(f"SELECT count(*) FROM {table}") == 1
        after = await pg_replica.lag(primary.admin_url, replica.dsn(), replica.name)
        assert after.replay_lsn is not None
        assert pg_replica.lsn_int(after.replay_lsn) >= pg_replica.lsn_int(lsn)

        # replay_lag on the primary: the standby reports replay at least every
        # second (wal_receiver_status_interval); the delay shows in it.
        deadline = time.monotonic() + 5
        while (after.seconds is None or after.seconds < 0.25) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            after = await pg_replica.lag(primary.admin_url, replica.dsn(), replica.name)
        assert after.seconds is not None and after.seconds >= (DELAY_MS - 50) / 1000, after
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
        await rconn.close()


async def test_waiting_for_replay_gives_up_at_its_deadline(replica: pg_replica.Replica) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await pg_replica.wait_for_replay(replica.dsn(), "FFFF/0", timeout_s=0.2)
    assert time.monotonic() - start < 2


def test_replication_lines_are_added_once_and_first(tmp_path: Path) -> None:
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("host replication all 127.0.0.1/32 scram-sha-256\nlocal all all trust\n")
    assert pg_replica.allow_replication(hba) is True
    lines = [x for x in hba.read_text().splitlines() if not x.startswith("#")]
    assert lines[0] == pg_replica.HOST_REPLICATION  # before the stricter rule
    assert pg_replica.allow_replication(hba) is False
    assert hba.read_text().count(pg_replica.HOST_REPLICATION) == 1


def test_the_stack_replica_is_made_once_then_reused_and_reports_its_lag(
    primary: PgCluster, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """stack_up/status/down (`make up|status|down PG_REPLICAS=1`) against the
    private primary instead of the machine's shared one."""
    env = {"PG_REPLICAS": "1", "PG_REPLICA_PORT": str(free_port())}
    replica = pg_replica_stack.stack_replica(run_dir, env)
    try:
        pg_replica_stack.stack_up(run_dir, primary.admin_url, env)
        assert "pg_basebackup" in capsys.readouterr().out
        assert asyncio.run(_val(replica.dsn(), "SELECT pg_is_in_recovery()")) is True
        pg_replica_stack.stack_up(run_dir, primary.admin_url, env)
        assert "reusing" in capsys.readouterr().out
        pg_replica_stack.stack_status(run_dir, primary.admin_url, env)
        status = capsys.readouterr().out
        assert f"127.0.0.1:{replica.port}" in status and "state=streaming" in status, status
        assert asyncio.run(replica.can_reuse(primary.admin_url))
        pg_replica_stack.stack_down(run_dir, env)
        assert "stopped" in capsys.readouterr().out
        assert not replica.running()
        pg_replica_stack.stack_status(run_dir, primary.admin_url, env)
        assert capsys.readouterr().out == ""
    finally:
        replica.destroy()


def test_the_stack_sets_replica_and_pooler_urls_only_when_asked(monkeypatch) -> None:
    for name in ("DATABASE_URL", "REVIEWS_DATABASE_URL", "PG_REPLICAS", "PG_POOLER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REVIEWS_INSTANCES", "1")
    (plain,) = stack.service_programs(["reviews"])
    assert "REPLICA_URLS" not in plain and "MIGRATE_DATABASE_URL" not in plain
    assert "DB_POOLER" not in plain

    direct = stack.service_database_url("reviews")
    monkeypatch.setenv("PG_REPLICAS", "1")
    monkeypatch.setenv("PG_POOLER", "1")
    (program,) = stack.service_programs(["reviews"])
    # Through the pooler as the app role (DML only; its timeouts are role settings).
    pooled = "postgresql://runway_reviews@127.0.0.1:6432/atelier_reviews"
    assert f'REVIEWS_DATABASE_URL="{pooled}"' in program
    assert f'REVIEWS_MIGRATE_DATABASE_URL="{direct}"' in program
    assert 'DB_POOLER="transaction"' in program
    assert 'REVIEWS_REPLICA_URLS="postgresql://postgres@127.0.0.1:5433/atelier_reviews"' in program
    monkeypatch.setenv("PG_REPLICA_PORT", "5544")
    monkeypatch.setenv("PG_POOLER_PORT", "6544")
    (program,) = stack.service_programs(["reviews"])
    assert "@127.0.0.1:6544/atelier_reviews" in program
    assert "@127.0.0.1:5544/atelier_reviews" in program


# --- PgBouncer -------------------------------------------------------------------


async def test_pooled_asyncpg_without_a_statement_cache_works_across_server_connections(
    bouncer: pgbouncer.PgBouncer,
) -> None:
    """The service-side settings behind the pooler: statement_cache_size=0."""
    client = await asyncpg.connect(
        bouncer.url(), statement_cache_size=0, server_settings={"application_name": "runway-t"}
    )
    holder = await asyncpg.connect(bouncer.url(), statement_cache_size=0)
    try:
        assert await client.fetchval("SELECT current_setting('application_name')") == "runway-t"
        first = await client.fetchval("SELECT $1::int + pg_backend_pid() * 0", 1)
        async with holder.transaction():  # holds the server `client` just used
            await holder.fetchval("SELECT 1")
            assert await client.fetchval("SELECT $1::int + pg_backend_pid() * 0", 1) == first
    finally:
        await client.close()
        await holder.close()


async def test_a_named_prepared_statement_fails_on_another_server_connection(
    bouncer: pgbouncer.PgBouncer,
) -> None:
    """asyncpg's default statement cache: its named statement exists on one
    server connection only; the next transaction may run on another."""
    client = await asyncpg.connect(bouncer.url())  # statement_cache_size=100
    holder = await asyncpg.connect(bouncer.url(), statement_cache_size=0)
    try:
        used = await client.fetchval("SELECT pg_backend_pid() + $1::int", 0)
        async with holder.transaction():  # takes the server the statement lives on
            assert await holder.fetchval("SELECT pg_backend_pid()") == used
            with pytest.raises(asyncpg.InvalidSQLStatementNameError):
                await client.fetchval("SELECT pg_backend_pid() + $1::int", 0)
    finally:
        await client.close()
        await holder.close()


async def test_a_statement_timeout_startup_parameter_is_refused_not_dropped(
    bouncer: pgbouncer.PgBouncer,
) -> None:
    with pytest.raises(asyncpg.ProtocolViolationError, match="statement_timeout"):
        await asyncpg.connect(
            bouncer.url(), statement_cache_size=0, server_settings={"statement_timeout": "100"}
        )


async def test_a_role_and_database_timeout_holds_through_the_pooler(
    primary: PgCluster, bouncer: pgbouncer.PgBouncer
) -> None:
    """The documented replacement: ALTER ROLE ... IN DATABASE ... SET, which
    every pooled server connection starts with and RESET ALL returns to."""
    admin = await asyncpg.connect(primary.admin_url)
    try:
        await admin.execute(
            "DO $$ BEGIN CREATE ROLE runway_app LOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        await admin.execute(
            "ALTER ROLE runway_app IN DATABASE postgres SET statement_timeout = 200"
        )
    finally:
        await admin.close()
    conn = await asyncpg.connect(bouncer.url(user="runway_app"), statement_cache_size=0)
    try:
        await conn.execute("RESET ALL")
        assert await conn.fetchval("SHOW statement_timeout") == "200ms"
        start = time.monotonic()
        with pytest.raises(asyncpg.QueryCanceledError):
            await conn.execute("SELECT pg_sleep(2)")
        assert time.monotonic() - start < 1.5
    finally:
        await conn.close()


def test_the_stack_pooler_program_serves_each_database_in_transaction_mode(
    primary: PgCluster, run_dir: Path
) -> None:
    """The supervisord program PG_POOLER=1 adds, run as supervisord runs it."""
    assert pgbouncer.binary(), "pgbouncer missing: run `make deps`"
    env = {"PG_POOLER": "1", "PG_POOLER_PORT": str(free_port())}
    direct = {"reviews": f"postgresql://postgres@127.0.0.1:{primary.port}/template1"}
    (program,) = pgbouncer.programs(run_dir, stack._program, primary.admin_url, direct, env)
    ini = (run_dir / "pgbouncer" / "pgbouncer.ini").read_text()
    settings = dict(x.split(" = ", 1) for x in ini.splitlines() if " = " in x)
    assert settings["pool_mode"] == "transaction"
    assert "statement_timeout" not in settings["ignore_startup_parameters"]
    assert f"template1 = host=127.0.0.1 port={primary.port} dbname=template1" in ini
    users = (run_dir / "pgbouncer" / "userlist.txt").read_text().splitlines()
    assert users == ['"postgres" ""', '"runway_reviews" ""']
    command = next(x for x in program.splitlines() if x.startswith("command="))
    process = subprocess.Popen(shlex.split(command.removeprefix("command=")))
    try:
        pgbouncer.wait_listening(int(env["PG_POOLER_PORT"]), 10, process)
        assert (run_dir / "pgbouncer" / "socket" / f".s.PGSQL.{env['PG_POOLER_PORT']}").exists()
        pooled = pgbouncer.pooled_url(direct["reviews"], env)
        assert pooled == f"postgresql://postgres@127.0.0.1:{env['PG_POOLER_PORT']}/template1"
        assert asyncio.run(_val_nocache(pooled, "SELECT current_database()")) == "template1"
        # The admin console speaks only the simple protocol: psql.
        show = ["psql", "-h", "127.0.0.1", "-p", env["PG_POOLER_PORT"], "-U", "postgres"]
        show += ["-d", "pgbouncer", "-Atc", "SHOW POOLS"]
        pools = subprocess.run(show, capture_output=True, text=True, timeout=10).stdout
        assert any(
            r.split("|")[0] == "template1" and r.endswith("|transaction")
            for r in pools.splitlines()
        ), pools
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _val_nocache(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=5, statement_cache_size=0)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()
