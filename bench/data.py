"""The dataset at SCALE, generated and loaded once, and the id pools the wrk
scripts draw from.

Generation writes data/scale-<S>/<service>/ and, when the generator exits
cleanly, a `bench-generated.json` beside its files; loading records the scale
and seed in a one-row `bench_dataset` table in the service's benchmark
database. Both are checked before anything heavy runs again (a full-scale load
takes many minutes).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from pathlib import Path

import asyncpg

from services.common.db import with_database

from .config import PYTHON, ROOT, BenchConfig

GENERATED_MARKER = "bench-generated.json"
HOT_SET = 1_000
WRITE_SET = 1_000
SAMPLE_MAX = 100_000  # uniform samples (questions, reviews) kept for the pools
# The cold reads' questions (the answers route): more than a flat-out run
# draws (about 100,000 in 15 s), so that few of its requests repeat an id
# and find it cached. 100,000 let a third of cold-answers' requests repeat.
COLD_QUESTIONS = 1_000_000


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- generation and loading -------------------------------------------------------


def ensure_generated(cfg: BenchConfig, service: str) -> Path:
    out = cfg.data_dir(service)
    marker = out / GENERATED_MARKER
    wanted = {"scale": cfg.scale, "seed": cfg.seed}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return out
    log(f"generating {service} at scale {cfg.scale} into {out}")
    started = time.monotonic()
    subprocess.run(
        [
            PYTHON,
            "-m",
            f"services.{service}.data.generator",
            "--scale",
            cfg.scale,
            "--seed",
            str(cfg.seed),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
    )
    marker.write_text(json.dumps(wanted))
    log(f"generated {service} in {time.monotonic() - started:.0f}s")
    return out


async def _loaded_as(dsn: str) -> dict[str, object] | None:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        if not await conn.fetchval("SELECT to_regclass('bench_dataset') IS NOT NULL"):
            return None
        row = await conn.fetchrow("SELECT scale, seed FROM bench_dataset")
        return dict(row) if row else None
    finally:
        await conn.close()


async def _mark_loaded(dsn: str, scale: str, seed: int) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_dataset"
            " (scale text NOT NULL, seed integer NOT NULL, loaded_at timestamptz NOT NULL)"
        )
        async with conn.transaction():
            await conn.execute("DELETE FROM bench_dataset")
            await conn.execute("INSERT INTO bench_dataset VALUES ($1, $2, now())", scale, seed)
    finally:
        await conn.close()


async def _allow_large_wal(dsn: str) -> None:
    """A full-scale load writes tens of GB of WAL; with the default 1 GB
    max_wal_size Postgres checkpoints about a hundred times during it. The
    load figures in the README were measured with 8 GB (a reload, no restart)."""
    conn = await asyncpg.connect(with_database(dsn, "postgres"), timeout=5)
    try:
        if await conn.fetchval(
            "SELECT setting::bigint < 8192 FROM pg_settings WHERE name = 'max_wal_size'"
        ):
            log("setting Postgres max_wal_size = 8GB for the bulk load (ALTER SYSTEM)")
            await conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
            await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def ensure_loaded(cfg: BenchConfig, service: str, env: dict[str, str], force: bool) -> None:
    dsn = cfg.database_url(service)
    wanted = {"scale": cfg.scale, "seed": cfg.seed}
    if not force and asyncio.run(_loaded_as(dsn)) == wanted:
        log(f"{service}: scale {cfg.scale} already loaded in {dsn}; migrating to this checkout")
        # A checkout with a newer migration than the load's: its services
        # would refuse to start on the older schema (services/common/migrate.py).
        subprocess.run(
            [PYTHON, "-m", "services.common.migrate", service],
            cwd=ROOT,
            env={**env, f"{service.upper()}_DATABASE_URL": dsn},
            check=True,
        )
        return
    data = ensure_generated(cfg, service)
    asyncio.run(_allow_large_wal(dsn))
    log(f"loading {service} into {dsn}")
    started = time.monotonic()
    subprocess.run(
        [
            PYTHON,
            "-m",
            f"services.{service}.data.loader",
            "--data",
            str(data),
            "--report",
            str(cfg.report_dir(service)),
            "--dsn",
            dsn,
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    asyncio.run(_mark_loaded(dsn, cfg.scale, cfg.seed))
    log(f"loaded {service} in {time.monotonic() - started:.0f}s")


# --- id pools -------------------------------------------------------------------------


async def _ids(dsn: str, sql: str, *args: object) -> list[int]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return [r[0] for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def _sample_sql(table: str, where: str = "NOT reported") -> str:
    # BERNOULLI over the table, percentage from the row estimate: a uniform
    # sample without sorting millions of rows by random().
    return (
        f"SELECT id FROM {table} TABLESAMPLE BERNOULLI (LEAST(100, 100.0 * $1 /"
        f" GREATEST(1, (SELECT reltuples FROM pg_class WHERE relname = '{table}'))))"
        f" WHERE {where}"
    )


def product_ids(cfg: BenchConfig) -> list[int]:
    if "overview" in cfg.services:
        return asyncio.run(
            _ids(cfg.database_url("overview"), "SELECT id FROM products ORDER BY id")
        )
    # Without the overview service, the generator's product count (ids 1..N).
    for service in cfg.services:
        info = cfg.data_dir(service) / "generator.json"
        if info.exists():
            return list(range(1, int(json.loads(info.read_text())["products"]) + 1))
    raise SystemExit("no product ids: no overview database and no generator.json")


def _write(path: Path, ids: list[int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


def build_pools(cfg: BenchConfig) -> dict[str, Path]:
    """Id files by pool name (hot, all, w4, w3, soak products and their
    questions, reviews and answers). Empty files for services not running."""
    products = product_ids(cfg)
    fixed = random.Random(cfg.seed)  # the hot set is the same in every run
    per_run = random.Random(cfg.run_id)  # write sets differ, so writes spread out
    cut = max(1, int(len(products) * 0.9))
    head, tail = products[:cut], products[cut:] or products[-1:]
    hot = sorted(fixed.sample(head, min(HOT_SET, len(head))))
    rest = sorted(set(head) - set(hot)) or head
    w3 = sorted(per_run.sample(rest, min(WRITE_SET, len(rest))))
    soak = sorted(per_run.sample(rest, min(5 * WRITE_SET, len(rest))))
    pools = {
        "hot_products": hot,
        # The cold pools in a random order: the cold workloads walk them in
        # file order (workload.lua, walk=<from>), each id once a pass, and
        # neighbouring ids, which share pages, end up apart.
        "all_products": per_run.sample(products, len(products)),
        "w4_products": tail,
        "w3_products": w3,
        "soak_products": soak,
    }
    pools.update(_qa_pools(cfg, hot, tail, w3, soak))
    pools["all_questions"] = per_run.sample(pools["all_questions"], len(pools["all_questions"]))
    pools.update(_reviews_pools(cfg, w3, soak))
    d = cfg.ids_dir
    for name, ids in pools.items():
        if not ids:
            log(f"pool {name} is empty: workloads leave out the operations that need it")
    return {name: _write(d / f"{name}.txt", ids) for name, ids in pools.items()}


def _qa_pools(
    cfg: BenchConfig, hot: list[int], tail: list[int], w3: list[int], soak: list[int]
) -> dict[str, list[int]]:
    names = ("hot_questions", "all_questions", "w4_questions", "w3_questions", "w3_answers")
    names += ("soak_questions", "soak_answers")
    if "qa" not in cfg.services:
        return {key: [] for key in names}
    dsn = cfg.database_url("qa")
    by_products = "SELECT id FROM questions WHERE product_id = ANY($1::int[]) AND NOT reported"
    answers = "SELECT id FROM answers WHERE question_id = ANY($1::int[]) AND NOT reported"
    w3_questions = asyncio.run(_ids(dsn, by_products, w3))
    soak_questions = asyncio.run(_ids(dsn, by_products, soak))
    return {
        "hot_questions": asyncio.run(_ids(dsn, by_products, hot)),
        "all_questions": asyncio.run(_ids(dsn, _sample_sql("questions"), COLD_QUESTIONS)),
        "w4_questions": asyncio.run(
            _ids(
                dsn,
                "SELECT id FROM questions WHERE product_id >= $1 AND NOT reported LIMIT $2",
                tail[0],
                SAMPLE_MAX,
            )
        ),
        "w3_questions": w3_questions,
        "w3_answers": asyncio.run(_ids(dsn, answers, w3_questions)),
        "soak_questions": soak_questions,
        "soak_answers": asyncio.run(_ids(dsn, answers, soak_questions)),
    }


def _reviews_pools(cfg: BenchConfig, w3: list[int], soak: list[int]) -> dict[str, list[int]]:
    names = ("w3_reviews", "soak_reviews", "sample_reviews")
    if "reviews" not in cfg.services:
        return {key: [] for key in names}
    dsn = cfg.database_url("reviews")
    by_products = "SELECT id FROM reviews WHERE product_id = ANY($1::int[]) AND NOT reported"
    return {
        "w3_reviews": asyncio.run(_ids(dsn, by_products, w3)),
        "soak_reviews": asyncio.run(_ids(dsn, by_products, soak)),
        "sample_reviews": asyncio.run(_ids(dsn, _sample_sql("reviews", "true"), SAMPLE_MAX)),
    }
