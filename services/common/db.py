"""The asyncpg pool, a thin wrapper that times connection acquisition, the
database bootstrap (create if missing) and the numbered-SQL migration runner."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("runway.db")

# Serialises concurrent migrators (several instances starting at once).
_MIGRATION_LOCK = 7_270_001


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release reset query: handlers never leave session state behind."""


class Database:
    """The pool plus the few access patterns the services use."""

    def __init__(self, pool: asyncpg.Pool, metrics: Metrics, acquire_timeout_s: float) -> None:
        self.pool = pool
        self._metrics = metrics
        self._acquire_timeout = acquire_timeout_s

    async def acquire(self) -> asyncpg.Connection:
        """A connection from the pool, timed; hand it back with pool.release().
        Bounded by asyncio.timeout rather than acquire(timeout=): on Python
        3.11 asyncpg implements that with wait_for, a new Task per query."""
        start = time.perf_counter()
        async with asyncio.timeout(self._acquire_timeout):
            conn = await self.pool.acquire()
        self._metrics.pool_acquire.observe(time.perf_counter() - start)
        return conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self.acquire()
        try:
            yield conn
        finally:
            await self.pool.release(conn)

    # The one-statement accesses skip the context managers: a generator-based
    # one costs a few microseconds per request on the read-miss and write paths.
    async def _one_statement(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        conn = await self.acquire()
        try:
            return await getattr(conn, method)(sql, *args)
        finally:
            await self.pool.release(conn)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._one_statement("fetch", sql, args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._one_statement("fetchrow", sql, args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._one_statement("fetchval", sql, args)


async def create_pool(settings: Settings) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        reset=_no_reset,
        timeout=settings.db_connect_timeout_s,
        command_timeout=settings.statement_timeout_ms / 1000 + 1,
        server_settings={
            "application_name": f"runway-{settings.service}",
            "statement_timeout": str(settings.statement_timeout_ms),
            "idle_in_transaction_session_timeout": "10000",
        },
    )


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
    """Apply the not-yet-applied `NNN_name.sql` files in order, each in its own
    transaction, recording them in schema_migrations. Returns what was applied."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for path in migration_files(migrations_dir):
            if path.stem in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
            applied_now.append(path.stem)
            log.info("applied migration %s", path.stem)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def prepare_database(url: str, migrations_dir: Path) -> list[str]:
    """Create the database if needed and bring its schema up to date."""
    await ensure_database(url)
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await migrate(conn, migrations_dir)
    finally:
        await conn.close()
