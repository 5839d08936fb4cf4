"""services/photos/sweep.py: an old photo nothing names is deleted (image and
thumbnail), one a review or an answer names is kept, whatever the host in its
URL, and so is a recent one; a dry run deletes nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import asyncpg

from services.photos import sweep
from services.photos.store import LocalStore

DAY = 24 * 3600
GHOST = 2_147_480_001


async def execute(dsn: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


def digest(n: int) -> str:
    return f"{n:032x}"


async def make_store(directory: Path, ages: dict[str, float]) -> LocalStore:
    store = LocalStore(directory)
    store.create()
    for name, age in ages.items():
        await store.put(name, b"x", "image/jpeg")
        then = time.time() - age
        os.utime(store.path(name), (then, then))
    return store


async def test_only_old_unreferenced_photos_are_deleted(
    tmp_path: Path, reviews_db: str, qa_db: str
) -> None:
    by_review, by_answer, orphan, fresh = (digest(0xA1C0 + i) for i in range(4))
    ages = {}
    for d, age in ((by_review, 3 * DAY), (by_answer, 3 * DAY), (orphan, 2 * DAY), (fresh, 60)):
        ages[f"{d}.jpg"] = ages[f"{d}-thumb.jpg"] = age
    store = await make_store(tmp_path / "store", ages)
    # Rows of a review and an answer no test reads (ids far past any other's),
    # removed afterwards: the databases are the session's.
    rows = (
        (
            reviews_db,
            "reviews_photos",
            "review_id",
            f"http://127.0.0.1:8080/photos/{by_review}-thumb.jpg",
        ),
        (qa_db, "answers_photos", "answer_id", f"https://cdn.example.com/photos/{by_answer}.jpg"),
    )
    for dsn, table, owner, url in rows:
        await execute(dsn, f"INSERT INTO {table} ({owner}, url) VALUES ({GHOST}, $1)", url)
    try:
        await check_collection(store, ages, reviews_db, qa_db, (by_review, by_answer, orphan))
    finally:
        for dsn, table, owner, _ in rows:
            await execute(dsn, f"DELETE FROM {table} WHERE {owner} = {GHOST}")


async def check_collection(
    store: LocalStore, ages: dict[str, float], reviews_db: str, qa_db: str, digests: tuple
) -> None:
    by_review, by_answer, orphan = digests
    keep = await sweep.referenced({"reviews": reviews_db, "qa": qa_db})
    assert {by_review, by_answer} <= keep and orphan not in keep

    planned = await sweep.collect(store, keep, DAY, dry_run=True)
    assert planned == [f"{orphan}.jpg", f"{orphan}-thumb.jpg"]  # the thumbnail last
    assert len(await store.listing()) == 8
    assert await sweep.collect(store, keep, DAY) == planned
    left = {name for name, _ in await store.listing()}
    assert left == set(ages) - set(planned)
