"""What the questions lists' read model costs and saves (docs/decisions/0036-qa-read-model.md).

    .venv/bin/python -m bench.qa_read_model writes [--n 300] [--rounds 6]
    .venv/bin/python -m bench.qa_read_model reads --dsn DSN [--n 3000] [--rounds 5]
    .venv/bin/python -m bench.qa_read_model storage --dsn DSN

writes: on a throwaway database (migrated, seeded: a product with 3 questions
of 2 answers each, and one with 200 questions of 2 answers and a photo each),
the median time of each qa write statement (queries.py's own SQL), with the
read model's triggers on and off (ALTER TABLE ... DISABLE TRIGGER USER), the
modes alternating round by round. Each statement runs in a transaction that
is rolled back, so every iteration sees the same data; the time is the
statement's (AFTER ... FOR EACH STATEMENT triggers run inside it), not the
commit's.

reads: on a loaded database (e.g. bench's atelier_qa_bench at SCALE 0.1),
sequential calls over one asyncpg connection for products drawn uniformly
from 1..max(product_id): today's query + Python fold
(queries.questions_page_from_tables) against the read model
(queries.questions_page), page 1 with the default count 5, and count 1000,
alternating round by round; wall microseconds per call.

storage: the read model's size per question and per product.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
import uvloop

from services.common.db import drop_database, migrate, with_database
from services.qa import queries
from services.qa.app import MIGRATIONS
from services.qa.data.check_read_model import OneConnection

ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = ("questions", "answers", "answers_photos")


# --- writes ---------------------------------------------------------------------------


async def seed_product(conn: asyncpg.Connection, product_id: int, questions: int, photo: bool):
    await conn.execute(
        """
        WITH q AS (
            INSERT INTO questions (product_id, body, asker_name, asker_email, helpful)
            SELECT $1, 'Does this ' || g || ' run small? ' || repeat('words ', 12), 'asker' || g,
                   'a@example.com', g % 7
            FROM generate_series(1, $2) g
            RETURNING id
        ), a AS (
            INSERT INTO answers (question_id, body, answerer_name, answerer_email, helpful)
            SELECT q.id, 'It runs true to size, ' || repeat('really ', 10), 'answerer',
                   'b@example.com', k
            FROM q, generate_series(1, 2) k
            RETURNING id
        )
        INSERT INTO answers_photos (answer_id, url)
        SELECT id, 'https://images.example/' || id || '.jpg' FROM a WHERE $3
        """,
        product_id,
        questions,
        photo,
    )


async def timed_rolled_back(conn: asyncpg.Connection, sql: str, args: tuple) -> float:
    tr = conn.transaction()
    await tr.start()
    try:
        started = time.perf_counter()
        await conn.fetch(sql, *args)
        return time.perf_counter() - started
    finally:
        await tr.rollback()


async def set_triggers(conn: asyncpg.Connection, on: bool) -> None:
    for table in TABLES:
        await conn.execute(f"ALTER TABLE {table} {'ENABLE' if on else 'DISABLE'} TRIGGER USER")


async def writes(n: int, rounds: int) -> None:
    url = with_database(ADMIN, "qa_read_model_cost")
    await drop_database(url)
    admin = await asyncpg.connect(ADMIN)
    await admin.execute("CREATE DATABASE qa_read_model_cost")
    await admin.close()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, MIGRATIONS)
        sizes = {"3 questions": (1, 3), "200 questions": (2, 200)}
        for product_id, count in sizes.values():
            await seed_product(conn, product_id, count, True)
        await conn.execute("ANALYZE")
        doc = await conn.fetchval(
            "SELECT sum(octet_length(element)) FROM question_documents WHERE product_id = 2"
        )
        print(f"seeded; the 200-question product's elements: {doc} bytes")

        async def pick(product_id: int) -> tuple[int, int]:
            return tuple(
                await conn.fetchrow(
                    "SELECT q.id, a.id FROM questions q JOIN answers a ON a.question_id = q.id"
                    " WHERE q.product_id = $1 ORDER BY random() LIMIT 1",
                    product_id,
                )
            )

        def plans(product_id: int) -> dict[str, Callable[[], Awaitable[tuple[str, tuple]]]]:
            async def question() -> tuple[str, tuple]:
                return queries.INSERT_QUESTION, (product_id, "A new question?", "n", "n@x.io")

            async def answer() -> tuple[str, tuple]:
                q, _ = await pick(product_id)
                photos = ["https://images.example/new1.jpg", "https://images.example/new2.jpg"]
                return queries.INSERT_ANSWER, (q, "A new answer.", "n", "n@x.io", photos)

            async def q_helpful() -> tuple[str, tuple]:
                return queries.QUESTION_HELPFUL, ((await pick(product_id))[0],)

            async def q_report() -> tuple[str, tuple]:
                return queries.QUESTION_REPORT, ((await pick(product_id))[0],)

            async def a_helpful() -> tuple[str, tuple]:
                return queries.ANSWER_HELPFUL, ((await pick(product_id))[1],)

            async def a_report() -> tuple[str, tuple]:
                return queries.ANSWER_REPORT, ((await pick(product_id))[1],)

            return {
                "POST question": question,
                "POST answer (2 photos)": answer,
                "PUT question helpful": q_helpful,
                "PUT question report": q_report,
                "PUT answer helpful": a_helpful,
                "PUT answer report": a_report,
            }

        times: dict[tuple[str, str, bool], list[float]] = {}
        for r in range(rounds):
            for on in (r % 2 == 0, r % 2 == 1):
                await set_triggers(conn, on)
                for size, (product_id, _) in sizes.items():
                    for op, plan in plans(product_id).items():
                        key = (size, op, on)
                        for _ in range(n):
                            sql, args = await plan()
                            times.setdefault(key, []).append(
                                await timed_rolled_back(conn, sql, args)
                            )
        await set_triggers(conn, True)
        print(f"median statement time, µs ({n} x {rounds // 2} per cell; alternated)")
        print(f"{'product':<14} {'write':<24} {'without':>8} {'with':>8} {'added':>8}")
        for size in sizes:
            for op in plans(1):
                off = statistics.median(times[(size, op, False)]) * 1e6
                on_ = statistics.median(times[(size, op, True)]) * 1e6
                print(f"{size:<14} {op:<24} {off:8.0f} {on_:8.0f} {on_ - off:8.0f}")
    finally:
        await conn.close()
        await drop_database(url)


# --- reads ----------------------------------------------------------------------------


async def reads(dsn: str, n: int, rounds: int) -> None:
    conn = await asyncpg.connect(dsn)
    db = OneConnection(conn)
    try:
        top = await conn.fetchval("SELECT max(product_id) FROM questions")
        rng = random.Random(36)
        modes: dict[str, Callable[[int, int], Awaitable[bytes]]] = {
            "live query + fold": lambda p, c: queries.questions_page_from_tables(db, p, 1, c),
            "read model": lambda p, c: queries.questions_page(db, p, 1, c),
        }
        for count in (5, 1000):
            results: dict[str, list[float]] = {m: [] for m in modes}
            sizes: dict[str, int] = {m: 0 for m in modes}
            for r in range(rounds + 1):  # round 0 warms the caches and the statement cache
                products = [rng.randint(1, top) for _ in range(n)]
                order = list(modes) if r % 2 else list(reversed(modes))
                for mode in order:
                    call = modes[mode]
                    started = time.perf_counter()
                    for p in products:
                        body = await call(p, count)
                        if r:
                            sizes[mode] += len(body)
                    if r:
                        results[mode].append((time.perf_counter() - started) / n * 1e6)
            print(f"page 1, count {count}: µs per call (median of {rounds} rounds of {n})")
            for mode, per in results.items():
                print(
                    f"  {mode:<18} {statistics.median(per):7.1f}  "
                    f"(rounds {', '.join(f'{x:.0f}' for x in per)}; "
                    f"mean body {sizes[mode] / n / rounds:.0f} B)"
                )
    finally:
        await conn.close()


async def storage(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM questions) questions,
                   (SELECT count(*) FROM questions WHERE NOT reported) visible,
                   (SELECT count(*) FROM answers) answers,
                   (SELECT count(DISTINCT product_id) FROM question_documents) products,
                   (SELECT sum(octet_length(element)) FROM question_documents) items,
                   pg_total_relation_size('question_documents') total,
                   pg_relation_size('question_documents') heap,
                   pg_indexes_size('question_documents') indexes,
                   pg_total_relation_size('questions') + pg_total_relation_size('answers')
                     + pg_total_relation_size('answers_photos') tables
            """
        )
        for key, value in row.items():
            print(f"{key:<10} {value:>14,}")
        print(f"bytes per question (total) {row['total'] / row['questions']:.0f}")
        print(f"JSON bytes per visible question {row['items'] / row['visible']:.0f}")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("writes")
    w.add_argument("--n", type=int, default=300)
    w.add_argument("--rounds", type=int, default=6)
    r = sub.add_parser("reads")
    r.add_argument("--dsn", required=True)
    r.add_argument("--n", type=int, default=3000)
    r.add_argument("--rounds", type=int, default=5)
    s = sub.add_parser("storage")
    s.add_argument("--dsn", required=True)
    a = parser.parse_args()
    if a.what == "writes":
        uvloop.run(writes(a.n, a.rounds))
    elif a.what == "reads":
        uvloop.run(reads(a.dsn, a.n, a.rounds))
    else:
        uvloop.run(storage(a.dsn))


if __name__ == "__main__":
    main()
