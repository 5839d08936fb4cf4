"""The asyncpg pool, a thin wrapper that times connection acquisition, the
database bootstrap (create if missing), the numbered-SQL migration runner and
the serving side's schema check. Migrations are a step of their own
(services/common/migrate.py, `make migrate`): a serving process runs no DDL and
refuses to start on a database whose schema is older than its code."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .fair_pool import FairPool
from .metrics import Metrics
from .settings import Settings

if TYPE_CHECKING:
    from .replicas import ReplicaRouter

log = logging.getLogger("runway.db")

# Serialises concurrent migrators (several instances starting at once).
_MIGRATION_LOCK = 7_270_001
# A session idle inside a transaction longer than this is ended by Postgres.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000
# Every serving statement is a keyed index lookup whose generic plan is the
# plan (bench.plan_cache lists them). Under the default ("auto") Postgres
# re-planned the questions page and the reviews page of 5 on every
# execution at full scale, their custom plans looking cheaper than the generic one:
# 166 -> 100 µs a reviews page of 5, 88 -> 71 µs a questions page
# (docs/decisions/0042).
PLAN_CACHE_MODE = "force_generic_plan"
# No JIT compilation in serving sessions: their statements run in well under
# a millisecond, and compiling one takes 15-20 ms. Postgres compiles when a
# plan's estimated cost passes jit_above_cost, which a generic plan of a
# read-model rebuild did on tables never analyzed (autovacuum off): POST
# answer with photos fell from ~700 to ~90 rps (docs/decisions/0051).
JIT = "off"


class SchemaNotReady(RuntimeError):
    """The database is missing or its schema older than this build's migrations."""


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release reset query: handlers never leave session state behind."""


class Database:
    """The pool plus the few access patterns the services use.

    fetch/fetchrow/fetchval run on the primary. The read_* calls are the
    cached reads: on the primary too unless read replicas are attached
    (attach_replicas; services/common/replicas.py routes them then). The
    write_* calls are the writes whose scopes are then invalidated: with
    replicas they also record the commit's WAL position for the invalidation.
    Without replicas each is the plain call plus one attribute test."""

    def __init__(self, pool: asyncpg.Pool, metrics: Metrics, acquire_timeout_s: float) -> None:
        self.pool = pool
        self._fair = FairPool(pool, acquire_timeout_s)
        self._metrics = metrics
        self._router: ReplicaRouter | None = None

    async def acquire(self) -> asyncpg.Connection:
        """A connection from the pool, in turn, within the acquire timeout
        (FairPool), timed; hand it back with release()."""
        start = time.perf_counter()
        conn = await self._fair.take()
        self._metrics.pool_acquire.observe(time.perf_counter() - start)
        return conn

    async def release(self, conn: asyncpg.Connection) -> None:
        await self._fair.give_back(conn)

    def idle_size(self) -> int:
        return self._fair.idle_size()

    async def release_idle(self) -> None:
        """Before the pool's close(): the connections kept idle go back to it."""
        await self._fair.release_idle()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self.acquire()
        try:
            yield conn
        finally:
            await self.release(conn)

    # The one-statement accesses skip the context managers: a generator-based
    # one costs a few microseconds per request on the read-miss and write paths.
    async def _one_statement(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        conn = await self.acquire()
        try:
            return await getattr(conn, method)(sql, *args)
        finally:
            await self.release(conn)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._one_statement("fetch", sql, args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._one_statement("fetchrow", sql, args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._one_statement("fetchval", sql, args)

    # --- routed by read replicas when attached ---------------------------------

    def attach_replicas(self, router: ReplicaRouter | None) -> None:
        self._router = router

    @property
    def replicas(self) -> ReplicaRouter | None:
        return self._router

    async def read_fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        router = self._router
        if router is None:
            return await self._one_statement("fetch", sql, args)
        return await router.read("fetch", sql, args)

    async def read_fetch_found(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """read_fetch for a lookup whose empty result means "no such thing"
        (a 404): with replicas, an empty result from one is read again on the
        primary. The thing may be newer than the replica, made by a write that
        invalidated other scopes (a new question's own q:<id> never was)."""
        router = self._router
        if router is None:
            return await self._one_statement("fetch", sql, args)
        return await router.read("fetch", sql, args, True)

    async def read_fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        router = self._router
        if router is None:
            return await self._one_statement("fetchrow", sql, args)
        return await router.read("fetchrow", sql, args)

    async def read_fetchval(self, sql: str, *args: Any) -> Any:
        router = self._router
        if router is None:
            return await self._one_statement("fetchval", sql, args)
        return await router.read("fetchval", sql, args)

    async def write_fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        router = self._router
        if router is None:
            return await self._one_statement("fetchrow", sql, args)
        return await router.write("fetchrow", sql, args)

    async def write_fetchval(self, sql: str, *args: Any) -> Any:
        router = self._router
        if router is None:
            return await self._one_statement("fetchval", sql, args)
        return await router.write("fetchval", sql, args)


def session_settings(statement_timeout_ms: int) -> dict[str, str]:
    """The serving sessions' timeouts, plan cache mode and JIT: startup parameters
    on a direct connection; behind a pooler, the app role's settings in its
    database (services/common/migrate.py sets them)."""
    return {
        "statement_timeout": str(statement_timeout_ms),
        "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_TIMEOUT_MS),
        "plan_cache_mode": PLAN_CACHE_MODE,
        "jit": JIT,
    }


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """The serving pool. With DB_POOLER=transaction (PgBouncer in transaction
    mode) a server connection is ours for one transaction only, so: no
    statement cache (asyncpg then uses the unnamed statement, re-parsed each
    time: a named one prepared on one server connection is missing on the next,
    'prepared statement "__asyncpg_stmt_1__" does not exist'), and no session
    settings as startup parameters (PgBouncer refuses them; the role's apply)."""
    pooled = settings.db_pooler == "transaction"
    server_settings = {"application_name": f"runway-{settings.service}"}
    if not pooled:
        server_settings |= session_settings(settings.statement_timeout_ms)
    try:
        return await asyncpg.create_pool(
            settings.database_url,
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            reset=_no_reset,
            timeout=settings.db_connect_timeout_s,
            command_timeout=settings.statement_timeout_ms / 1000 + 1,
            server_settings=server_settings,
            **({"statement_cache_size": 0} if pooled else {}),
        )
    except asyncpg.InvalidCatalogNameError:
        raise SchemaNotReady(
            f"database {database_name(settings.database_url)} does not exist: run `make migrate`"
            f" (python -m services.common.migrate {settings.service})"
        ) from None


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead; its query (a socket directory given
    as ?host=, say) kept."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def ensure_database(url: str) -> None:
    """Create the database named in `url` when it does not exist yet."""
    name = database_name(url)
    conn = await asyncpg.connect(with_database(url, "postgres"), timeout=5)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
                log.info("created database %s", name)
            except asyncpg.DuplicateDatabaseError:
                pass  # created concurrently by another starter
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    name = database_name(url)
    conn = await asyncpg.connect(with_database(url, "postgres"), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def migration_files(migrations_dir: Path) -> list[Path]:
    return sorted(p for p in migrations_dir.glob("[0-9][0-9][0-9]_*.sql"))


async def migrate(conn: asyncpg.Connection, migrations_dir: Path) -> list[str]:
    """Apply the not-yet-applied `NNN_name.sql` files in order, recording them
    in schema_migrations. Returns what was applied.

    Each file runs in a transaction of its own that first takes the migration
    lock as a transaction-level advisory lock and then asks whether the file
    is still pending: concurrent migrators apply each file once, in order. The
    lock ends with its transaction, so this holds through PgBouncer in
    transaction mode too (a session-level pg_advisory_lock would be taken on
    one server connection and its unlock sent on another). The migrate step
    still connects directly (it creates databases and roles)."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    for path in migration_files(migrations_dir):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", path.stem
            ):
                continue
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
        applied_now.append(path.stem)
        log.info("applied migration %s", path.stem)
    return applied_now


def schema_number(version: str) -> str:
    """The `NNN` of a version (`003_documents` -> `003`)."""
    return version.split("_", 1)[0]


async def applied_versions(conn: asyncpg.Connection) -> set[str]:
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return set()
    return {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}


async def check_schema(
    conn: asyncpg.Connection, migrations_dir: Path, service: str, database: str
) -> None:
    """Raise SchemaNotReady unless every migration this build ships is applied."""
    shipped = [p.stem for p in migration_files(migrations_dir)]
    applied = await applied_versions(conn)
    missing = [v for v in shipped if v not in applied]
    if missing:
        at = max((schema_number(v) for v in applied), default="none")
        raise SchemaNotReady(
            f"database {database} is at schema {at}, this build needs"
            f" {schema_number(shipped[-1])} (missing {', '.join(missing)}): run `make migrate`"
            f" (python -m services.common.migrate {service})"
        )


async def require_schema(pool: asyncpg.Pool, settings: Settings, migrations_dir: Path) -> None:
    """The serving process's start-up check (no DDL): closes `pool` and raises
    SchemaNotReady when the database is behind this build."""
    try:
        async with pool.acquire() as conn:
            await check_schema(
                conn, migrations_dir, settings.service, database_name(settings.database_url)
            )
    except BaseException:
        pool.terminate()
        raise


async def prepare_database(url: str, migrations_dir: Path) -> list[str]:
    """Create the database if needed and bring its schema up to date (the
    migrate step's first half: services/common/migrate.py adds the app role)."""
    await ensure_database(url)
    conn = await asyncpg.connect(url, timeout=5, statement_cache_size=0)
    try:
        return await migrate(conn, migrations_dir)
    finally:
        await conn.close()
