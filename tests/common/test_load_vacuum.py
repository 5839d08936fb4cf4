"""Every service's load ends with its tables vacuumed (decision 0057): each
page all-visible and all-frozen, so that no first reader after a load has to
prune dead versions or set hint bits. Real Postgres, a throwaway database
per load, the generator's data at a tiny scale."""

from __future__ import annotations

import dataclasses
import importlib
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.common.data.service_load import ServiceLoader
from services.common.db import drop_database, ensure_database
from tests.conftest import PG_ADMIN_URL

# Small, but with photos: the fill that rewrites reviews and answers runs.
SCALES = {"overview": 0.0002, "reviews": 0.001, "qa": 0.0003}

PAGES = """
SELECT t::text AS name,
       pg_relation_size(t) / current_setting('block_size')::int AS pages,
       v.all_visible, v.all_frozen
FROM unnest($1::regclass[]) t, pg_visibility_map_summary(t) v
ORDER BY 1
"""


async def load_and_read(
    service: str, load: ServiceLoader, tmp_path: Path, redis_url: str, read: str, *args: Any
) -> tuple[dict[str, Any], list[asyncpg.Record]]:
    """Generate the service's data, `load` it into a fresh database, run
    `read` there; the report and the rows."""
    generator = importlib.import_module(f"services.{service}.data.generator")
    generator.generate(tmp_path / "data", scale=SCALES[service], seed=5)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/test_vacuum_{uuid.uuid4().hex[:10]}"
    await ensure_database(url)
    try:
        report = await load(
            url, tmp_path / "data", tmp_path / "report", redis_url=redis_url, quiet=True
        )
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
            return report, await conn.fetch(read, *args)
        finally:
            await conn.close()
    finally:
        await drop_database(url)


@pytest.mark.parametrize("service", sorted(SCALES))
async def test_a_load_leaves_every_page_all_visible_and_frozen(
    service: str, tmp_path: Path, redis_server
) -> None:
    loader = importlib.import_module(f"services.{service}.data.loader")
    report, rows = await load_and_read(
        service, loader.load, tmp_path, redis_server.url, PAGES, list(loader.TABLES)
    )
    assert "vacuum" in report["steps"]
    assert sum(r["pages"] for r in rows) > 0
    behind = {
        r["name"]: (r["pages"], r["all_visible"], r["all_frozen"])
        for r in rows
        if not r["pages"] == r["all_visible"] == r["all_frozen"]
    }
    assert not behind, f"(pages, all-visible, all-frozen) after the load: {behind}"


async def test_a_failed_vacuum_leaves_the_load_done(tmp_path: Path, redis_server, capsys) -> None:
    """The data is committed before the vacuum: its failure is a warning."""
    loader = importlib.import_module("services.qa.data.loader")
    load = dataclasses.replace(loader.load, tables=("no_such_table",))
    report, rows = await load_and_read(
        "qa", load, tmp_path, redis_server.url, "SELECT count(*) FROM questions"
    )
    assert report["status"] == "ok"
    assert rows[0][0] == report["files"]["questions.csv"]["loaded"] > 0
    assert "VACUUM (FREEZE, ANALYZE) failed" in capsys.readouterr().err
