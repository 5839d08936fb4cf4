"""Postgres for the benchmark: a buffer pool that holds the data the read
path touches, filled before the workloads run.

Why: on this kind of VM the kernel's page cache does not keep a file's pages
(the hypervisor's balloon reclaims them even with gigabytes free: a relation
read twice a minute apart was partly back on disk), and the disk answers a
few hundred random reads per second. With the stock 128 MB of shared_buffers
a cold read then waits on the disk, and W2 measured the VM's disk. The
benchmark therefore sizes shared_buffers (ALTER SYSTEM, then a restart of the
cluster with pg_ctlcluster, as the deploy manifests would set it) and reads
the read path's tables and indexes into it with pg_prewarm. Both are logged
and the resulting size is recorded in the results.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import asyncpg

from services.common.db import with_database

from . import huge_pages
from .config import BenchConfig
from .data import log

# Share of the machine's memory for Postgres's buffers: the full-scale data is
# ~12 GB on a 24 GB box, and the services, Redis and wrk need well under 2 GB.
# BENCH_BUFFER_SHARE overrides it (with the stored elements of decision 0040
# the read path is ~15 GB at SCALE 1.0, reviews' heap left out at 0.5;
# decision 0041).
BUFFER_SHARE = float(os.environ.get("BENCH_BUFFER_SHARE", "0.5"))
# The buffers on huge pages where the machine can hold them (huge_pages.py);
# BENCH_HUGE_PAGES=0 keeps them on 4 kB pages (decision 0060's other side).
HUGE_PAGES = os.environ.get("BENCH_HUGE_PAGES", "1").strip().lower() not in ("0", "false", "no")
# Not on the path of the benchmark's reads, so not worth buffer space: written
# but never read by a GET (the first three), or the overview catalogue tables
# whose answers the loader prebuilds into product_documents (read only for a
# product without a document, and by the cart's stock check).
NOT_READ = (
    "characteristic_reviews",
    "interactions",
    "cart_items",
    "features",
    "styles",
    "photos",
    "skus",
    "related",
)


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


async def _admin(cfg: BenchConfig) -> asyncpg.Connection:
    dsn = with_database(cfg.database_url(cfg.services[0]), "postgres")
    return await asyncpg.connect(dsn, timeout=10)


async def _shared_buffers(cfg: BenchConfig) -> int:
    """shared_buffers in effect, in bytes."""
    conn = await _admin(cfg)
    try:
        return int(
            await conn.fetchval(
                "SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'shared_buffers'"
            )
        )
    finally:
        await conn.close()


def _restart_cluster(port: int) -> bool:
    """Restart the Debian-managed cluster on `port`; False when there is none."""
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        return False
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True)
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == str(port):
            restart = subprocess.run(["pg_ctlcluster", fields[0], fields[1], "restart"])
            return restart.returncode == 0
    return False


def shared_buffers(cfg: BenchConfig) -> int:
    return asyncio.run(_shared_buffers(cfg))


def _wait_up(cfg: BenchConfig) -> None:
    """Until the restarted cluster answers."""
    deadline = time.monotonic() + 60
    while True:
        try:
            asyncio.run(_shared_buffers(cfg))
            return
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _restart(cfg: BenchConfig, why: str) -> bool:
    log(f"{why}: restarting the cluster")
    if not _restart_cluster(5432):
        log("could not restart Postgres here (no pg_ctlcluster cluster on 5432, or no rights):")
        log("  restart it yourself for the setting to apply; measuring as it is")
        return False
    _wait_up(cfg)
    return True


async def _show(cfg: BenchConfig, name: str) -> str:
    conn = await _admin(cfg)
    try:
        return str(await conn.fetchval(f"SHOW {name}"))
    finally:
        await conn.close()


async def _alter(cfg: BenchConfig, name: str, value: str) -> None:
    conn = await _admin(cfg)
    try:
        await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    finally:
        await conn.close()


def ensure_buffers(cfg: BenchConfig) -> int:
    """shared_buffers at BUFFER_SHARE of memory, on huge pages where this
    machine can hold them (ensure_huge_pages); returns the size in effect."""
    want_mb = int(_memory_bytes() * BUFFER_SHARE) // 2**20
    current = asyncio.run(_shared_buffers(cfg))
    if current < want_mb * 2**20 * 0.95:
        asyncio.run(_alter(cfg, "shared_buffers", f"{want_mb}MB"))
        why = f"Postgres shared_buffers {current // 2**20} MB -> {want_mb} MB"
        if _restart(cfg, why):
            current = asyncio.run(_shared_buffers(cfg))
    ensure_huge_pages(cfg)
    return current


def on_huge_pages(cfg: BenchConfig) -> bool:
    """Whether Postgres's shared memory is on huge pages: they are all
    committed (huge_pages.committed), and the setting allows them."""
    if asyncio.run(_show(cfg, "huge_pages")) == "off":
        return False
    need = int(asyncio.run(_show(cfg, "shared_memory_size_in_huge_pages")))
    return huge_pages.committed() >= need


def ensure_huge_pages(cfg: BenchConfig) -> None:
    """Postgres's buffers on huge pages (its default `huge_pages = try`, with
    the kernel's pool raised to what it asks); with BENCH_HUGE_PAGES=0, on 4
    kB pages (`off`) and the pool given back, so that an A/B's other side
    does not hold the same memory twice."""
    setting = asyncio.run(_show(cfg, "huge_pages"))
    if not HUGE_PAGES:
        if setting != "off":
            asyncio.run(_alter(cfg, "huge_pages", "off"))
            _restart(cfg, "Postgres huge_pages -> off (BENCH_HUGE_PAGES=0)")
        huge_pages.release()
        return
    need = int(asyncio.run(_show(cfg, "shared_memory_size_in_huge_pages")))
    held = huge_pages.reserve(need)
    if held < need:
        log(f"huge pages: {need:,} wanted, {held:,} held: Postgres stays on 4 kB pages")
    if setting == "off":
        asyncio.run(_alter(cfg, "huge_pages", "try"))
    if held >= need and not on_huge_pages(cfg):
        _restart(cfg, f"Postgres onto {need:,} huge pages")
    log(f"Postgres on huge pages: {'yes' if on_huge_pages(cfg) else 'no'}")


async def _relations(dsn: str) -> list[tuple[str, str, int, bool]]:
    """(dsn, relation, bytes, is_index) of the database's read path."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        rows = await conn.fetch(
            "SELECT c.oid::regclass::text, pg_relation_size(c.oid), c.relkind = 'i'"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_index i ON i.indexrelid = c.oid"
            " LEFT JOIN pg_class t ON t.oid = i.indrelid"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
            " AND coalesce(t.relname, c.relname) <> ALL($1::text[])",
            list(NOT_READ),
        )
        return [(dsn, r[0], int(r[1]), bool(r[2])) for r in rows]
    finally:
        await conn.close()


async def _prewarm(rels: list[tuple[str, str, int, bool]]) -> None:
    by_dsn: dict[str, list[str]] = {}
    for dsn, name, _, _ in rels:
        by_dsn.setdefault(dsn, []).append(name)
    for dsn, names in by_dsn.items():
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            for name in names:
                await conn.execute("SELECT pg_prewarm($1::regclass, 'buffer')", name)
        finally:
            await conn.close()


def prewarm_one(dsn: str, relation: str) -> None:
    """Read one relation into the buffers (a ceiling's, outside the services
    being walked)."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            await conn.execute("SELECT pg_prewarm($1::regclass, 'buffer')", relation)
        finally:
            await conn.close()

    asyncio.run(run())


def prewarm(cfg: BenchConfig, buffers: int) -> dict[str, object]:
    """Read every service's read path into the buffers: all indexes first, then
    tables smallest first, while 90% of the buffers last."""
    started = time.monotonic()
    rels = [r for s in cfg.services for r in asyncio.run(_relations(cfg.database_url(s)))]
    rels.sort(key=lambda r: (not r[3], r[2]))
    budget = int(buffers * 0.9)
    chosen = []
    for rel in rels:
        if rel[2] <= budget:
            chosen.append(rel)
            budget -= rel[2]
    asyncio.run(_prewarm(chosen))
    mb = {
        s: sum(r[2] for r in chosen if r[0] == cfg.database_url(s)) // 2**20 for s in cfg.services
    }
    left_out = [r[1] for r in rels if r not in chosen]
    seconds = round(time.monotonic() - started, 1)
    log(f"prewarmed {sum(mb.values()):,} MB in {seconds}s; left out: {left_out or 'nothing'}")
    return {
        "shared_buffers_mb": buffers // 2**20,
        "huge_pages": on_huge_pages(cfg),
        "prewarmed_mb": mb,
        "left_out": left_out,
        "prewarm_s": seconds,
    }
