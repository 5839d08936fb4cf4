"""Reads right after a load, as the load left the tables against vacuumed
(decision 0057). Both sides start from one template database per service,
loaded once by the checkout under test (before 0057's loader, which did not
vacuum): each round copies the template and, on the "vacuumed" side, runs
what the loader now runs after its commit (`VACUUM (FREEZE, ANALYZE)` of
the service's loaded tables). Sides alternate their order round by round.

    # one statement, straight at Postgres: its rate on a first and a second
    # pass over the same random products, and its buffers per execution
    python -m bench.after_load_ab statements --service qa --template vt1_qa_t
    # the same statement on copies of two templates, each as it was loaded
    # (decision 0058: the loader before and after the photos went in the COPY)
    python -m bench.after_load_ab statements --service qa --template old_qa --against new_qa
    # the bench on copies of the three templates atelier_<service>_tpl
    python -m bench.after_load_ab bench -- --scale 0.1 --only ceiling-query,W2
    # ... or on copies of atelier_<service>_old against atelier_<service>_new
    python -m bench.after_load_ab bench --suffixes old,new -- --scale 1.0 --only W2
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import random
import subprocess
import sys
import time

import asyncpg

from services.common.data.rebuild import vacuum_loaded
from services.common.db import drop_database, with_database
from services.qa.queries import ANSWERS_PAGE, QUESTIONS_PAGE
from services.reviews.queries import PAGE_SQL

from .config import ROOT

ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@/postgres?host=/run/postgresql")
SIDES = ("as-loaded", "vacuumed")
# The cold statement each service's W2 share is made of, with its arguments
# after the id; and the table and column whose largest value bounds the ids
# (uniform from 1). "qa-answers" is the answers page, of the qa service.
STATEMENTS = {
    "reviews": (PAGE_SQL["newest"], (1000, 0), "reviews", "product_id"),
    "qa": (QUESTIONS_PAGE, (5, 0), "questions", "product_id"),
    "qa-answers": (ANSWERS_PAGE, (5, 0), "questions", "id"),
}
SERVING = {"plan_cache_mode": "force_generic_plan", "jit": "off"}


def alternated(rounds: int, sides: tuple[str, str] = SIDES) -> list[tuple[int, str]]:
    """(round, side) in run order: AB, BA, AB, ..."""
    return [(r, side) for r in range(rounds) for side in (sides if r % 2 == 0 else sides[::-1])]


async def copy_of(template: str, db: str, service: str, side: str) -> float:
    """`db` as a fresh copy of `template`, vacuumed on that side; the vacuum's seconds."""
    await drop_database(with_database(ADMIN, db))
    admin = await asyncpg.connect(ADMIN)
    try:
        await admin.execute(f"CREATE DATABASE {db} TEMPLATE {template}")
    finally:
        await admin.close()
    if side != "vacuumed":
        return 0.0
    tables = importlib.import_module(f"services.{service}.data.loader").TABLES
    conn = await asyncpg.connect(with_database(ADMIN, db))
    try:
        started = time.perf_counter()
        await vacuum_loaded(conn, tables)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _pass(db: str, sql: str, args: tuple, ids: list[int], conns: int = 2) -> float:
    """Statements a second over `ids`, `conns` sessions at a time."""
    left = list(ids)
    url = with_database(ADMIN, db)
    sessions = [await asyncpg.connect(url, server_settings=SERVING) for _ in range(conns)]

    async def worker(conn: asyncpg.Connection) -> None:
        statement = await conn.prepare(sql)
        while left:
            await statement.fetchval(left.pop(), *args)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in sessions))
    seconds = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in sessions))
    return len(ids) / seconds


async def _buffers(db: str, sql: str, args: tuple, ids: list[int]) -> dict[str, float]:
    """Shared buffers hit / read / dirtied per execution (EXPLAIN ANALYZE)."""
    conn = await asyncpg.connect(with_database(ADMIN, db), server_settings=SERVING)
    keys = ("Shared Hit Blocks", "Shared Read Blocks", "Shared Dirtied Blocks")
    total = dict.fromkeys(keys, 0)
    try:
        explain = await conn.prepare("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
        for product_id in ids:
            plan = json.loads(await explain.fetchval(product_id, *args))[0]["Plan"]
            for key in keys:
                total[key] += plan.get(key, 0)
    finally:
        await conn.close()
    return {key.split()[1].lower(): round(n / len(ids), 2) for key, n in total.items()}


async def statements(
    statement: str, template: str, rounds: int, count: int, against: str | None = None
) -> None:
    """Sides: as loaded and vacuumed copies of `template`, or, `against`
    given, copies of `template` and of `against` as they are."""
    sql, args, table, column = STATEMENTS[statement]
    service = statement.split("-")[0]
    sides = (template, against) if against else SIDES
    conn = await asyncpg.connect(with_database(ADMIN, template))
    last = await conn.fetchval(f"SELECT max({column}) FROM {table}")
    await conn.close()
    db = f"{template}_ab"
    for r, side in alternated(rounds, sides):
        vacuum = await copy_of(side if against else template, db, service, side)
        rng = random.Random(r)  # the same products on both sides of a round
        ids = [rng.randint(1, last) for _ in range(count)]
        first = await _pass(db, sql, args, ids)
        second = await _pass(db, sql, args, ids)
        explained = await _buffers(db, sql, args, [rng.randint(1, last) for _ in range(300)])
        row = {
            "round": r,
            "side": side,
            "vacuum_s": round(vacuum, 2),
            "first_pass_per_s": round(first),
            "second_pass_per_s": round(second),
            "buffers": explained,
        }
        print(json.dumps(row), flush=True)
    await drop_database(with_database(ADMIN, db))


def bench(rounds: int, bench_args: list[str], suffixes: tuple[str, str] | None = None) -> None:
    """Sides: as loaded and vacuumed copies of atelier_<service>_tpl, or,
    `suffixes` given, copies of atelier_<service>_<suffix> as they are."""
    for r, side in alternated(rounds, suffixes or SIDES):
        template = "atelier_{}_" + (side if suffixes else "tpl")
        vacuum = {}
        for s in ("overview", "reviews", "qa"):
            seconds = asyncio.run(copy_of(template.format(s), f"atelier_{s}_bench", s, side))
            vacuum[s] = round(seconds, 2)
        run = subprocess.run(
            [sys.executable, "-m", "bench.run", *bench_args],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        shown = [
            line for line in run.stdout.splitlines() if "json:" in line or "back to back" in line
        ]
        print(
            json.dumps(
                {"round": r, "side": side, "vacuum_s": vacuum, "rc": run.returncode, "run": shown}
            ),
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("statements", "bench"))
    p.add_argument("--service", choices=sorted(STATEMENTS), default="qa")
    p.add_argument("--template", help="statements: the template database")
    p.add_argument("--against", help="statements: a second template, the other side")
    p.add_argument("--suffixes", help="bench: two template suffixes, A,B (default: tpl, vacuumed)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--count", type=int, default=20_000, help="statements per pass")
    argv = sys.argv[1:] if argv is None else argv
    # bench.run's own arguments follow "--", passed on as they are.
    split = argv.index("--") if "--" in argv else len(argv)
    a = p.parse_args(argv[:split])
    bench_args = argv[split + 1 :]
    if a.mode == "statements":
        asyncio.run(statements(a.service, a.template, a.rounds, a.count, a.against))
    else:
        bench(a.rounds, bench_args, tuple(a.suffixes.split(",")) if a.suffixes else None)


if __name__ == "__main__":
    main()
