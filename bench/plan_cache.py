"""Postgres's plan cache and the serving statements (decision 0042).

    python -m bench.plan_cache plans [--scale 1.0]
    python -m bench.plan_cache time [--scale 1.0] [--rounds 4] [--n 2000]

plans: for every parameterised statement of the services' queries.py and of
the outbox, the top of its generic plan (plan_cache_mode force_generic_plan)
and any sequential scan in it, then how many of 30 executions the default
mode ("auto") planned afresh (custom plans), ids uniform.

time: µs per execution under "auto" against "force_generic_plan", on a
fresh connection each, the order alternating per round; the cold-read
statements as W2 sends them (ids uniform over all products or questions)
and the qa writes, each in a transaction rolled back. Prints each round and
the medians.

Against the bench databases at --scale (loaded by `make bench` or
bench.cold_ab at that scale), as postgres."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Callable
from types import ModuleType

import asyncpg

from bench.run import parse_args as bench_args
from services.common import outbox
from services.overview import queries as overview
from services.qa import queries as qa
from services.reviews import queries as reviews

MODES = ("auto", "force_generic_plan")
# A value of each parameter type, for EXPLAIN EXECUTE.
SAMPLE = {
    "int4": "5",
    "int8": "5",
    "text": "'x'",
    "_text": "'{}'",
    "_int4": "'{1}'",
    "bool": "true",
}
# The largest id a statement's first parameter takes, per database.
MAX_ID = {
    "product": "SELECT max(id) FROM products",
    "review_product": "SELECT max(product_id) FROM reviews",
    "qa_product": "SELECT max(product_id) FROM questions",
    "question": "SELECT max(id) FROM questions",
    "answer": "SELECT max(id) FROM answers",
}
Args = Callable[[int], tuple]
# name: (service, statement, id kind, arguments from an id, rolled back)
READS: dict[str, tuple[str, str, str, Args, bool]] = {
    **{
        f"reviews page {sort} {n}": (
            "reviews",
            reviews.PAGE_SQL[sort],
            "review_product",
            lambda i, n=n: (i, n, 0),
            False,
        )
        for sort in ("newest", "helpful")
        for n in (5, 30, 1000)
    },
    "reviews meta": ("reviews", reviews.META_SQL, "review_product", lambda i: (i,), False),
    "questions 5": ("qa", qa.QUESTIONS_PAGE, "qa_product", lambda i: (i, 5, 0), False),
    "answers 5": ("qa", qa.ANSWERS_PAGE, "question", lambda i: (i, 5, 0), False),
    "product": ("overview", overview.DOCUMENT_DETAIL, "product", lambda i: (i,), False),
    "styles": ("overview", overview.DOCUMENT_STYLES, "product", lambda i: (i,), False),
}
WRITES: dict[str, tuple[str, str, str, Args, bool]] = {
    "POST question": (
        "qa",
        qa.INSERT_QUESTION,
        "qa_product",
        lambda i: (i, "a question", "asker", "a@b.c"),
        True,
    ),
    "POST answer": (
        "qa",
        qa.INSERT_ANSWER_NO_PHOTOS,
        "question",
        lambda i: (i, "an answer", "answerer", "a@b.c"),
        True,
    ),
    "POST answer 2 photos": (
        "qa",
        qa.INSERT_ANSWER,
        "question",
        lambda i: (i, "an answer", "answerer", "a@b.c", ["http://x/1.jpg", "http://x/2.jpg"]),
        True,
    ),
    "PUT question helpful": ("qa", qa.QUESTION_HELPFUL, "question", lambda i: (i,), True),
    "PUT answer helpful": ("qa", qa.ANSWER_HELPFUL, "answer", lambda i: (i,), True),
    "PUT answer report": ("qa", qa.ANSWER_REPORT, "answer", lambda i: (i,), True),
    "PUT review helpful": ("reviews", reviews.MARK_HELPFUL, "review_product", lambda i: (i,), True),
}


def statements(module: ModuleType) -> list[tuple[str, str]]:
    """The module's upper-case SQL constants that take parameters."""
    found: list[tuple[str, str]] = []
    for name, value in vars(module).items():
        if not name.isupper() or name.startswith("_"):
            continue
        if isinstance(value, str) and "$1" in value:
            found.append((name, value))
        elif isinstance(value, dict):
            found += [(f"{name}[{k}]", v) for k, v in value.items() if "$1" in str(v)]
    return found


async def plans(dsn: Callable[[str], str]) -> None:
    modules = {"overview": [overview], "reviews": [reviews, outbox], "qa": [qa, outbox]}
    for service, mods in modules.items():
        conn = await asyncpg.connect(dsn(service))
        try:
            # Product ids (question ids for the answers' statements: as many exist).
            kind = {"overview": "product", "reviews": "review_product", "qa": "qa_product"}
            top = await conn.fetchval(MAX_ID[kind[service]])
            for name, sql in (s for m in mods for s in statements(m)):
                statement = await conn.prepare(sql)
                types = [t.name for t in statement.get_parameters()]
                await conn.execute("SET plan_cache_mode = force_generic_plan")
                await conn.execute(f"PREPARE audit ({', '.join(types)}) AS {sql}")
                values = ", ".join(SAMPLE.get(t, "NULL") for t in types)
                lines = [r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE audit({values})")]
                await conn.execute("DEALLOCATE audit")
                await conn.execute("RESET plan_cache_mode")
                seq = [line.strip() for line in lines if "Seq Scan" in line]
                custom = "-"
                if all(t in ("int4", "int8") for t in types) and not sql.lstrip().startswith(
                    ("UPDATE", "DELETE", "WITH")
                ):  # reads only: 30 executions, ids uniform, as W2 sends them
                    for _ in range(30):
                        first = random.randint(1, top)
                        await statement.fetch(first, *[5, 0][: len(types) - 1])
                    custom = await conn.fetchval(
                        "SELECT custom_plans FROM pg_prepared_statements WHERE statement = $1",
                        sql,
                    )
                print(f"{service:9s} {name:26s} custom {custom!s:>2s}/30  {lines[0][:70]}")
                for line in seq:
                    print(f"{'':37s} SEQ SCAN: {line}")
        finally:
            await conn.close()


async def _per_call(dsn: str, mode: str, sql: str, calls: list[tuple], rolled_back: bool) -> float:
    conn = await asyncpg.connect(dsn, server_settings={"plan_cache_mode": mode})
    try:
        statement = await conn.prepare(sql)
        elapsed = 0.0
        for args in calls:
            tx = conn.transaction() if rolled_back else None
            if tx:
                await tx.start()
            started = time.perf_counter()
            await statement.fetch(*args)
            elapsed += time.perf_counter() - started
            if tx:
                await tx.rollback()
        return elapsed / len(calls) * 1e6
    finally:
        await conn.close()


async def timing(dsn: Callable[[str], str], rounds: int, n: int) -> None:
    tops: dict[tuple[str, str], int] = {}
    for name, (service, sql, kind, args, rolled_back) in {**READS, **WRITES}.items():
        if (service, kind) not in tops:
            conn = await asyncpg.connect(dsn(service))
            tops[service, kind] = await conn.fetchval(MAX_ID[kind])
            await conn.close()
        per_mode: dict[str, list[float]] = {m: [] for m in MODES}
        for r in range(rounds):
            calls = [args(random.randint(1, tops[service, kind])) for _ in range(n)]
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                per_mode[mode].append(await _per_call(dsn(service), mode, sql, calls, rolled_back))
        auto, generic = (statistics.median(per_mode[m]) for m in MODES)
        rounds_text = " ".join(
            f"{a:.0f}/{g:.0f}" for a, g in zip(per_mode["auto"], per_mode[MODES[1]], strict=True)
        )
        print(
            f"{name:24s} auto {auto:6.1f} µs  generic {generic:6.1f} µs  ratio {auto / generic:.2f}"
            f"   rounds auto/generic: {rounds_text}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=("plans", "time"))
    p.add_argument("--scale", default="1.0")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--n", type=int, default=2000, help="executions per round and mode")
    a = p.parse_args(argv)
    cfg, _ = bench_args(["--scale", a.scale])
    if a.what == "plans":
        asyncio.run(plans(cfg.database_url))
    else:
        asyncio.run(timing(cfg.database_url, a.rounds, a.n))


if __name__ == "__main__":
    main()
