"""Garbage collection of uploads no review or answer took up: a job run once
a day (cron, a Kubernetes CronJob), never by a serving process.

    python -m services.photos.sweep [--older-than-hours 24] [--dry-run]

A stored photo (an image and its thumbnail, one SHA-256 prefix) is deleted
when it is older than the cut-off and no row of `reviews_photos.url` (the
reviews database) or `answers_photos.url` (the qa database) names it, under
whatever host. It reads those two columns and nothing else, with each
service's own URL (REVIEWS_DATABASE_URL, QA_DATABASE_URL: services/common/
settings.py); if either cannot be read, nothing is deleted. The store is the
one the photos service uses (PHOTOS_STORE and the rest: settings.py)."""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import asyncpg

from services.common import settings as cfg

from .s3_store import S3Store
from .settings import PhotoSettings
from .store import LocalStore, PhotoStore

NAME = re.compile(r"^([0-9a-f]{32})(?:-thumb)?\.(?:jpg|webp)$")
# The digest a URL names, for any host: Postgres's regex (substring() returns the group).
REFERENCED_SQL = """
    SELECT DISTINCT substring(url from '/photos/([0-9a-f]{{32}})(?:-thumb)?\\.(?:jpg|webp)$')
    FROM {table} WHERE url LIKE '%/photos/%'
"""
REFERENCES = (("reviews", "reviews_photos"), ("qa", "answers_photos"))


async def referenced(dsns: dict[str, str]) -> set[str]:
    """Every digest a review or an answer names."""
    digests: set[str] = set()
    for service, table in REFERENCES:
        conn = await asyncpg.connect(dsns[service], timeout=10)
        try:
            rows = await conn.fetch(REFERENCED_SQL.format(table=table))
        finally:
            await conn.close()
        digests |= {row[0] for row in rows if row[0]}
    return digests


async def collect(
    store: PhotoStore, keep: set[str], older_than_s: float, *, dry_run: bool = False
) -> list[str]:
    """Deletes what is older than the cut-off and not in `keep`; returns the names."""
    cutoff = time.time() - older_than_s
    doomed = []
    for name, created in await store.listing():
        match = NAME.match(name)
        if match and created < cutoff and match.group(1) not in keep:
            doomed.append(name)
    # The full image first, its thumbnail last: the service takes a present
    # thumbnail as a whole pair (views.py), so a half-deleted pair is redone.
    doomed.sort(key=lambda n: "-thumb." in n)
    if not dry_run:
        for name in doomed:
            await store.delete(name)
    return doomed


async def run(older_than_hours: float, dry_run: bool) -> list[str]:
    settings = PhotoSettings.from_env()
    keep = await referenced({s: cfg.database_url(s) for s, _ in REFERENCES})
    if settings.s3 is not None:
        store = S3Store(settings.s3)
        await store.open()
        try:
            return await collect(store, keep, older_than_hours * 3600, dry_run=dry_run)
        finally:
            await store.close()
    local = LocalStore(settings.directory)
    return await collect(local, keep, older_than_hours * 3600, dry_run=dry_run)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--older-than-hours", type=float, default=24)
    parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    args = parser.parse_args()
    deleted = asyncio.run(run(args.older_than_hours, args.dry_run))
    verb = "would delete" if args.dry_run else "deleted"
    print(f"[photos sweep] {verb} {len(deleted)} objects")
    for name in deleted:
        print(name)


if __name__ == "__main__":
    main()
