"""What the reviews read model (services/reviews/migrations/004_read_model.sql)
costs and saves, measured with asyncpg straight against a loaded reviews
database (decision 0035). Not a throughput benchmark: one connection,
sequential calls.

    python -m bench.reviews_read_model_cost --dsn postgresql://postgres@/rm_bench_reviews?host=/run/postgresql

- writes: each write statement of queries.py (POST's INSERT_REVIEW with a
  photo and the product's characteristics scored, MARK_HELPFUL, REPORT) on
  random products, and on one product with --big reviews, with the read
  model's triggers on and off (`SET LOCAL session_replication_role =
  replica` turns them off; needs a superuser), alternated in blocks; each
  statement in a transaction rolled back afterwards, so the data stays as it
  was and only the statement is timed (not the commit);
- reads: the read model's review_page / review_meta against the live
  queries' review_page_from_tables / review_meta_from_tables (query and
  shaping, no HTTP, no cache), alternated in blocks, µs per call.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import asyncpg

from services.reviews import queries

BIG_PRODUCT = 2_000_000_000  # far past the generated ids


class Direct:
    """Database's read_* on one connection (what queries.py's reads call)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def read_fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.conn.fetch(sql, *args)

    async def read_fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)

    async def read_fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.conn.fetchrow(sql, *args)


async def ensure_big_product(conn: asyncpg.Connection, size: int) -> None:
    """A product with `size` reviews (a photo on every third) and 4
    characteristics, written once through the triggers."""
    have = await conn.fetchval("SELECT count(*) FROM reviews WHERE product_id = $1", BIG_PRODUCT)
    if have >= size:
        return
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO characteristics (product_id, name)"
            " SELECT $1, n FROM unnest(ARRAY['Fit', 'Length', 'Comfort', 'Quality']) n",
            BIG_PRODUCT,
        )
        await conn.execute(
            """
            WITH r AS (
                INSERT INTO reviews (product_id, rating, date, summary, body, recommend,
                                     reviewer_name, reviewer_email, helpfulness)
                SELECT $1, 1 + i % 5, now() - i * interval '1 hour', 'Summary ' || i,
                       repeat('A review body of a realistic length. ', 8), i % 3 > 0,
                       'reviewer' || i, 'r' || i || '@example.com', i % 17
                FROM generate_series(1, $2) i
                RETURNING id
            )
            INSERT INTO reviews_photos (review_id, url)
            SELECT id, 'https://img.example/' || id || '.jpg' FROM r WHERE id % 3 = 0
            """,
            BIG_PRODUCT,
            size - have,
        )
        await conn.execute(
            "INSERT INTO product_ratings (product_id, r1, r2, r3, r4, r5, recommend_false,"
            " recommend_true) SELECT $1, count(*) FILTER (WHERE rating = 1),"
            " count(*) FILTER (WHERE rating = 2), count(*) FILTER (WHERE rating = 3),"
            " count(*) FILTER (WHERE rating = 4), count(*) FILTER (WHERE rating = 5),"
            " count(*) FILTER (WHERE NOT recommend), count(*) FILTER (WHERE recommend)"
            " FROM reviews WHERE product_id = $1 AND NOT reported"
            " ON CONFLICT (product_id) DO NOTHING",
            BIG_PRODUCT,
        )


async def one_write(conn: asyncpg.Connection, op: str, pid: int, triggers: bool) -> float:
    """Seconds of one write statement on product `pid`, rolled back."""
    tr = conn.transaction()
    await tr.start()
    try:
        if not triggers:
            await conn.execute("SET LOCAL session_replication_role = replica")
        if op == "post":
            chars = await conn.fetch(
                "SELECT id FROM characteristics WHERE product_id = $1 ORDER BY id", pid
            )
            args = (
                pid,
                4,
                "A summary",
                "A body of a review that is long enough to be accepted by the API.",
                True,
                "name",
                "e@example.com",
                ["https://img.example/new.jpg"],
                [c[0] for c in chars],
                [3] * len(chars),
            )
            started = time.perf_counter()
            await conn.fetchrow(queries.INSERT_REVIEW, *args)
        else:
            rid = await conn.fetchval(
                "SELECT id FROM reviews WHERE product_id = $1 AND NOT reported"
                " ORDER BY random() LIMIT 1",
                pid,
            )
            sql = queries.MARK_HELPFUL if op == "helpful" else queries.REPORT
            started = time.perf_counter()
            await conn.fetchrow(sql, rid)
        return time.perf_counter() - started
    finally:
        await tr.rollback()


async def writes(conn: asyncpg.Connection, pids: list[int], n: int, block: int) -> None:
    rng = random.Random(1)
    print(f"writes: median µs per statement (n={n} each; blocks of {block}, alternated)")
    print(f"{'statement':<10} {'product':<14} {'triggers off':>13} {'triggers on':>12}", end="")
    print(f" {'extra':>8}")
    for op in ("post", "helpful", "report"):
        for label, choose in (
            ("random", lambda: rng.choice(pids)),
            (f"{BIG_PRODUCT} (big)", lambda: BIG_PRODUCT),
        ):
            times: dict[bool, list[float]] = {False: [], True: []}
            for i in range(2 * n // block):
                triggers = i % 2 == 1
                for _ in range(block):
                    times[triggers].append(await one_write(conn, op, choose(), triggers))
            off, on = (statistics.median(times[t]) * 1e6 for t in (False, True))
            print(f"{op:<10} {label:<14} {off:>13.0f} {on:>12.0f} {on - off:>8.0f}")


async def reads(conn: asyncpg.Connection, pids: list[int], n: int, rounds: int) -> None:
    db = Direct(conn)
    rng = random.Random(2)
    cases = {
        "page count=5 relevant": (
            lambda p: queries.review_page(db, p, "relevant", 1, 5),
            lambda p: queries.review_page_from_tables(db, p, "relevant", 1, 5),
        ),
        "page count=1000 page=1": (
            lambda p: queries.review_page(db, p, "relevant", 1, 1000),
            lambda p: queries.review_page_from_tables(db, p, "relevant", 1, 1000),
        ),
        "meta": (
            lambda p: queries.review_meta(db, p),
            lambda p: queries.review_meta_from_tables(db, p),
        ),
    }
    print(f"reads: µs per call, sequential, {n} random products per round, {rounds} rounds")
    print(f"{'read':<26} {'live query (rounds)':>28} {'read model (rounds)':>28}")
    for name, (model, live) in cases.items():
        got: dict[str, list[float]] = {"live": [], "model": []}
        for r in range(rounds):
            sample = [rng.choice(pids) for _ in range(n)]
            order = ("live", "model") if r % 2 == 0 else ("model", "live")
            for which in order:
                fn = live if which == "live" else model
                for p in sample[:200]:  # warm-up
                    await fn(p)
                started = time.perf_counter()
                for p in sample:
                    await fn(p)
                got[which].append((time.perf_counter() - started) / n * 1e6)
        print(
            f"{name:<26} {' / '.join(f'{x:.0f}' for x in got['live']):>28}"
            f" {' / '.join(f'{x:.0f}' for x in got['model']):>28}"
        )
    # The big product's first page: a slice of a long list.
    for name, fn in (
        ("big product, count=5", lambda: queries.review_page(db, BIG_PRODUCT, "newest", 1, 5)),
        (
            "big product, count=5 live",
            lambda: queries.review_page_from_tables(db, BIG_PRODUCT, "newest", 1, 5),
        ),
        (
            "big product, count=1000",
            lambda: queries.review_page(db, BIG_PRODUCT, "newest", 1, 1000),
        ),
        (
            "big product, count=1000 live",
            lambda: queries.review_page_from_tables(db, BIG_PRODUCT, "newest", 1, 1000),
        ),
    ):
        for _ in range(50):
            await fn()
        started = time.perf_counter()
        for _ in range(500):
            await fn()
        print(f"{name:<30} {(time.perf_counter() - started) / 500 * 1e6:>8.0f} µs")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--big", type=int, default=500, help="reviews of the big product")
    parser.add_argument("--writes", type=int, default=1000, help="statements per variant")
    parser.add_argument("--reads", type=int, default=3000, help="products per read round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--only", choices=("writes", "reads"), default=None)
    args = parser.parse_args()
    conn = await asyncpg.connect(args.dsn)
    try:
        await ensure_big_product(conn, args.big)
        pids = [
            r[0]
            for r in await conn.fetch(
                "SELECT DISTINCT product_id FROM reviews WHERE NOT reported AND product_id < $1",
                BIG_PRODUCT,
            )
        ]
        if args.only != "reads":
            await writes(conn, pids, args.writes, 50)
        if args.only != "writes":
            await reads(conn, pids, args.reads, args.rounds)
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
