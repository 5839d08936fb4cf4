"""Streaming a parsed file into its table with COPY (FORMAT csv), inside the
load's one transaction, and the session settings for that bulk load."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg
from tqdm import tqdm

from .csv_parse import Converter, FileSpec
from .parse_job import ParseJob
from .rebuild import drop_indexes, indexes_file
from .report import LoadReport


def _progress_bar(total: int, desc: str) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        leave=False,
        disable=not sys.stderr.isatty(),
    )


async def copy_parsed(
    conn: asyncpg.Connection, job: ParseJob, report: LoadReport, *, freeze: bool = True
) -> Any:
    """COPY a ParseJob's rows into its table, record its rejects and stats in
    `report`; returns the converter's result(). Closes the job."""
    started = time.perf_counter()
    spec = job.spec
    bar = _progress_bar(job.size, spec.name)

    async def source() -> AsyncIterator[bytes]:
        done = 0
        async for chunk in job.chunks():
            if chunk.rejects:
                report.add_rejects(chunk.rejects)
            bar.update(chunk.position - done)
            done = chunk.position
            if chunk.data:
                yield chunk.data

    try:
        await conn.copy_to_table(
            spec.table,
            source=source(),
            columns=list(spec.target_columns),
            format="csv",
            freeze=freeze,
        )
    finally:
        bar.close()
        await asyncio.to_thread(job.close)
    stats = job.stats
    assert stats is not None
    stats.seconds = time.perf_counter() - started
    report.add_file(stats)
    return job.result


async def copy_file(
    conn: asyncpg.Connection,
    data_dir: Path,
    spec: FileSpec,
    make_converter: Callable[[Any], Converter],
    context: Any,
    report: LoadReport,
    *,
    parse_in_child: bool | None = None,
    freeze: bool = True,
) -> Any:
    """Parse `data_dir/spec.name` and COPY the converted rows into spec.table.

    `make_converter(context)` builds the converter where the parsing runs (a
    spawned child when `parse_in_child`; None, the default: for files of
    16 MB or more; see ParseJob), so both must be picklable: a module-level
    function and plain data such as arrays. The converter may carry a
    `result()` callable whose value (e.g. an id -> product map) is returned
    here. `freeze` needs the table truncated in the same transaction. To
    parse the next file while this one is COPYed, create its ParseJob first
    and use copy_parsed()."""
    job = ParseJob(data_dir, spec, make_converter, context, parse_in_child)
    return await copy_parsed(conn, job, report, freeze=freeze)


# --------------------------------------------------------------------------- the bulk session

BULK_SETTINGS = {
    "maintenance_work_mem": "1GB",
    "max_parallel_maintenance_workers": "2",
    "synchronous_commit": "off",
    "work_mem": "256MB",  # the aggregate GROUP BYs hash in memory
}


async def bulk_session(conn: asyncpg.Connection) -> None:
    """SET LOCAL the bulk-load settings (call inside the load transaction)."""
    for name, value in BULK_SETTINGS.items():
        await conn.execute(f"SET LOCAL {name} = '{value}'")


async def truncate(conn: asyncpg.Connection, tables: Iterable[str]) -> None:
    await conn.execute(f"TRUNCATE {', '.join(tables)}")


async def disable_triggers(conn: asyncpg.Connection, tables: tuple[str, ...]) -> list[str]:
    """Disable the enabled user triggers on `tables` (inside the load's
    transaction: a failed load gets them back with the rollback); returns the
    ALTER TABLE statements that enable them again."""
    rows = await conn.fetch(
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger"
        " WHERE tgrelid = ANY($1::regclass[]) AND NOT tgisinternal AND tgenabled = 'O'",
        list(tables),
    )
    for table, name in rows:
        await conn.execute(f'ALTER TABLE {table} DISABLE TRIGGER "{name}"')
    return [f'ALTER TABLE {table} ENABLE TRIGGER "{name}"' for table, name in rows]


async def enable_triggers(conn: asyncpg.Connection, statements: list[str]) -> None:
    for statement in statements:
        await conn.execute(statement)


async def begin_bulk_load(
    conn: asyncpg.Connection, migrations: Path, tables: Iterable[str]
) -> Path | None:
    """The start of every load (inside its transaction): the bulk session,
    TRUNCATE `tables`, drop the secondary indexes of the service's
    `NNN_indexes.sql`; returns that file, for rebuild_after_copy."""
    index_sql = indexes_file(migrations)
    await bulk_session(conn)
    await truncate(conn, tables)
    if index_sql:
        await drop_indexes(conn, index_sql)
    return index_sql
