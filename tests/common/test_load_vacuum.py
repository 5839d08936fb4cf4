"""Every service's load ends with its tables vacuumed (decision 0057): each
page all-visible and all-frozen, so that no first reader after a load has to
prune dead versions or set hint bits. Real Postgres, a throwaway database
per service, the generator's data at a tiny scale."""

from __future__ import annotations

import importlib
import uuid
from pathlib import Path

import asyncpg
import pytest

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


@pytest.mark.parametrize("service", sorted(SCALES))
async def test_a_load_leaves_every_page_all_visible_and_frozen(
    service: str, tmp_path: Path, redis_server
) -> None:
    loader = importlib.import_module(f"services.{service}.data.loader")
    generator = importlib.import_module(f"services.{service}.data.generator")
    generator.generate(tmp_path / "data", scale=SCALES[service], seed=5)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/test_vacuum_{uuid.uuid4().hex[:10]}"
    await ensure_database(url)
    try:
        report = await loader.load(
            url, tmp_path / "data", tmp_path / "report", redis_url=redis_server.url, quiet=True
        )
        assert "vacuum" in report["steps"]
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
            rows = await conn.fetch(PAGES, list(loader.TABLES))
        finally:
            await conn.close()
    finally:
        await drop_database(url)
    assert sum(r["pages"] for r in rows) > 0
    behind = {
        r["name"]: (r["pages"], r["all_visible"], r["all_frozen"])
        for r in rows
        if not r["pages"] == r["all_visible"] == r["all_frozen"]
    }
    assert not behind, f"(pages, all-visible, all-frozen) after the load: {behind}"
