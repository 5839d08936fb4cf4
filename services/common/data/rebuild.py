"""Around the bulk COPY: drop the secondary indexes and the primary keys
before it (COPY into bare tables, ids checked unique while parsing), then
rebuild them, refresh the statistics, build aggregates and move the id
sequences past the loaded ids; after the commit, vacuum what was loaded."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import asyncpg

from .report import LoadReport

_INDEX_NAME = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?IF\s+NOT\s+EXISTS\s+([A-Za-z_][\w$]*)",
    re.IGNORECASE,
)


def indexes_file(migrations_dir: Path) -> Path | None:
    """The service's `NNN_indexes.sql` (secondary indexes), if any."""
    found = sorted(Path(migrations_dir).glob("[0-9][0-9][0-9]_indexes.sql"))
    return found[-1] if found else None


def index_names(sql: str) -> list[str]:
    """Names of the `CREATE INDEX IF NOT EXISTS name` statements in `sql`."""
    return _INDEX_NAME.findall(re.sub(r"--[^\n]*", "", sql))


async def drop_indexes(conn: asyncpg.Connection, sql_file: Path) -> list[str]:
    """Drop the secondary indexes that `sql_file` creates (before a COPY)."""
    names = index_names(await asyncio.to_thread(Path(sql_file).read_text))
    for name in names:
        await conn.execute(f'DROP INDEX IF EXISTS "{name}"')
    return names


async def create_indexes(conn: asyncpg.Connection, sql_file: Path) -> None:
    """Rebuild them by running the file (after the COPY)."""
    await conn.execute(await asyncio.to_thread(Path(sql_file).read_text))


async def drop_primary_keys(
    conn: asyncpg.Connection, tables: Iterable[str]
) -> list[tuple[str, str, str]]:
    """Drop the tables' primary keys for a bulk load (ids must then be checked
    unique while parsing, as FileParser does); returns what
    restore_primary_keys needs. Tables with incoming foreign keys cannot."""
    keys = await conn.fetch(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE contype = 'p' AND conrelid = ANY($1::regclass[])",
        list(tables),
    )
    for table, name, _ in keys:
        await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    return [tuple(k) for k in keys]


async def restore_primary_keys(
    conn: asyncpg.Connection, keys: Iterable[tuple[str, str, str]]
) -> None:
    for table, name, definition in keys:
        await conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


async def reset_sequences(
    conn: asyncpg.Connection, tables: Iterable[str], id_column: str = "id"
) -> dict[str, int]:
    """Move each table's identity sequence so the next value is max(id) + 1
    (1 for an empty table). Returns the next value per table."""
    nxt: dict[str, int] = {}
    for table in tables:
        nxt[table] = await conn.fetchval(
            f"SELECT setval(pg_get_serial_sequence($1, $2), coalesce(max({id_column}), 0) + 1,"
            f" false) FROM {table}",
            table,
            id_column,
        )
    return nxt


async def rebuild_after_copy(
    conn: asyncpg.Connection,
    report: LoadReport,
    index_sql: Path | None,
    analyze: Sequence[str],
    sequences: Sequence[str],
    *,
    primary_keys: Iterable[tuple[str, str, str]] | None = None,
    aggregates: Mapping[str, str] | None = None,
) -> None:
    """After the bulk COPY: the primary keys that drop_primary_keys dropped
    (when given), the secondary indexes, fresh statistics, `aggregates` (step
    name -> SQL, built once the rows are in), then the id sequences (last:
    setval is not undone by a rollback), each timed in the report."""
    if primary_keys is not None:
        started = time.perf_counter()
        await restore_primary_keys(conn, primary_keys)
        report.step("primary_keys", time.perf_counter() - started)
    started = time.perf_counter()
    if index_sql:
        await create_indexes(conn, index_sql)
    report.step("indexes", time.perf_counter() - started)
    started = time.perf_counter()
    await conn.execute(f"ANALYZE {', '.join(analyze)}")
    report.step("analyze", time.perf_counter() - started)
    for name, sql in (aggregates or {}).items():
        started = time.perf_counter()
        await conn.execute(sql)
        report.step(name, time.perf_counter() - started)
    started = time.perf_counter()
    await reset_sequences(conn, sequences)
    report.step("sequences", time.perf_counter() - started)


async def vacuum_loaded(conn: asyncpg.Connection, tables: Sequence[str]) -> None:
    """After the load's commit (VACUUM cannot run in a transaction): every
    loaded table left all-visible and all-frozen, with fresh statistics.

    COPY FREEZE writes its rows that way, but the rows written after it are
    not: the photo elements' fill rewrites every review and answer with
    photos (a quarter and a sixth of them), and the characteristics, the
    aggregates and the documents are INSERT ... SELECT. Left as they are,
    the first readers of a page prune its dead versions and set hint bits,
    so cold reads after a load dirty pages and run slower until each page
    has been read (decision 0057). VACUUM does that work here, once,
    without cost delay."""
    await conn.execute(f"VACUUM (FREEZE, ANALYZE) {', '.join(tables)}")
