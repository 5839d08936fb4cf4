"""The whole load, the same for every service: `ServiceLoader` runs the
service's file steps in one transaction, writes the report, flushes the
service's cache, and gives every loader the same command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from .rebuild import vacuum_loaded
from .report import LoadReport
from .values import EtlError

# (conn, data_dir, report, parse_in_child): TRUNCATE and COPY the service's
# files, rebuild what the COPY needs rebuilt; runs inside the load transaction.
LoadFiles = Callable[[asyncpg.Connection, Path, LoadReport, "bool | None"], Awaitable[None]]


@dataclass(frozen=True)
class ServiceLoader:
    """A service's loader: `await load(dsn, data_dir, report_dir)` from Python,
    `load.main(argv)` as `python -m services.<service>.data.loader`.

    `parse_in_child` picks where the export files are parsed: None (the
    default, from Python and from the command line alike) = files of 16 MB
    or more in a spawned child process each, so that parsing overlaps the
    COPY on another core, smaller ones inline (a child costs more than it
    saves there); True = every file in a child; False = every file inline,
    in this process (`--inline`; no overlap, for debugging)."""

    service: str
    cache_namespace: str
    migrations: Path
    load_files: LoadFiles
    description: str
    tables: tuple[str, ...]  # the tables the load replaces: vacuumed after it

    async def __call__(
        self,
        dsn: str,
        data_dir: Path | str,
        report_dir: Path | str,
        *,
        parse_in_child: bool | None = None,
        quiet: bool = False,
        redis_url: str | None = None,
    ) -> dict[str, Any]:
        """Replace the service's data with the files in `data_dir` in one
        transaction (a failed load leaves the previous data), write
        load-report.json and rejects.csv into `report_dir`, then flush the
        service's cache (`redis_url`, default REDIS_URL): after the commit, so
        that a reader that refilled it mid-load with old rows is dropped too;
        then vacuum the loaded tables (`vacuum_loaded`; the services may serve
        meanwhile: VACUUM blocks neither reads nor writes). Returns the report."""
        from services.common.db import ensure_database, migrate

        service = self.service
        await ensure_database(dsn)
        conn = await asyncpg.connect(dsn)
        report = LoadReport(Path(report_dir), service)
        try:
            await migrate(conn, self.migrations)
            async with conn.transaction():
                await self.load_files(conn, Path(data_dir), report, parse_in_child)
        except BaseException as exc:
            await conn.close()
            report.finish("failed", f"{type(exc).__name__}: {exc}", quiet=quiet)
            raise
        try:
            await self._flush_cache(redis_url, report)
            await self._vacuum(conn, report)
        finally:
            await conn.close()
        return report.finish(quiet=quiet)

    async def _flush_cache(self, redis_url: str | None, report: LoadReport) -> None:
        from services.common.cache import flush_namespace
        from services.common.settings import Settings

        started = time.perf_counter()
        redis_url = redis_url or Settings.from_env(self.service).redis_url
        if not await flush_namespace(redis_url, self.cache_namespace, timeout_ms=500):
            print(
                f"warning: {self.service} cache flush did not reach Redis at {redis_url}; running "
                "processes drop their local tier within a lease and Redis entries expire with "
                "their TTL",
                file=sys.stderr,
            )
        report.step("cache_flush", time.perf_counter() - started)

    async def _vacuum(self, conn: asyncpg.Connection, report: LoadReport) -> None:
        started = time.perf_counter()
        try:
            await vacuum_loaded(conn, self.tables)
        except asyncpg.PostgresError as exc:
            # The data is in: a failed vacuum costs the first reads' speed only.
            print(
                f"warning: {self.service} loaded, but VACUUM (FREEZE, ANALYZE) failed: {exc}; "
                "run it by hand",
                file=sys.stderr,
            )
        report.step("vacuum", time.perf_counter() - started)

    def main(self, argv: list[str] | None = None) -> None:
        """The command line every service's loader shares."""
        from services.common.settings import database_url

        service = self.service
        parser = argparse.ArgumentParser(description=self.description)
        parser.add_argument("--data", type=Path, default=Path("data") / service)
        parser.add_argument("--report", type=Path, default=Path("data/reports") / service)
        parser.add_argument(
            "--dsn",
            default=None,
            help=f"default: {service.upper()}_DATABASE_URL, DATABASE_URL, or the local one",
        )
        parser.add_argument("--redis", default=None, help="default: REDIS_URL or the local one")
        parser.add_argument(
            "--inline", action="store_true", help="parse every file in this process"
        )
        args = parser.parse_args(argv)
        try:
            asyncio.run(
                self(
                    args.dsn or database_url(service),
                    args.data,
                    args.report,
                    redis_url=args.redis,
                    parse_in_child=False if args.inline else None,
                )
            )
        except EtlError as exc:
            sys.exit(f"load failed: {exc}")
