"""Operator check of the questions lists, as served from the stored elements,
against the tables.

    python -m services.qa.data.check_read_model [--sample N] [--dsn ...] [--seed S]

For N products drawn at random from those with questions (all of them with
--sample 0), the whole list and two random pages as served
(queries.questions_page: the rows' stored elements joined in SQL) must equal,
byte for byte, the live query and fold (queries.questions_page_from_tables).
Read-only. Prints the products that differ and exits 1 if any does. The
elements are generated columns and cannot go stale; an answer's stored
photos (answers.photo_elements, which the questions list reads to know
whether to look for photo urls) are kept by a trigger, so a difference means
a photo reached the tables without it (e.g. with session_replication_role =
replica, or the trigger disabled by hand); repair it with
`SELECT qa_fill_answer_photo_elements()`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from typing import Any

import asyncpg

from services.qa import queries

WHOLE = 2**31 - 1  # a count past any list: the whole list as one page


class OneConnection:
    """The two Database read methods the page functions call, on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def read_fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.conn.fetch(sql, *args)

    async def read_fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)


async def check(dsn: str, sample: int, seed: int) -> list[int]:
    """The products (of the sample) whose pages differ."""
    conn = await asyncpg.connect(dsn)
    try:
        products = [r[0] for r in await conn.fetch("SELECT DISTINCT product_id FROM questions")]
        rng = random.Random(seed)
        if sample and sample < len(products):
            products = rng.sample(products, sample)
        db = OneConnection(conn)
        bad = []
        for product in sorted(products):
            count = rng.randint(1, 10)
            pages = [(1, WHOLE), (1, count), (rng.randint(2, 5), count)]
            for page, per in pages:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    served = await queries.questions_page(db, product, page, per)
                    live = await queries.questions_page_from_tables(db, product, page, per)
                if served != live:
                    bad.append(product)
                    break
        print(f"checked {len(products)} products: {len(bad)} differ")
        return bad
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    from services.common.settings import database_url

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=1000, help="products; 0: all")
    parser.add_argument("--dsn", default=None, help="default: QA_DATABASE_URL, DATABASE_URL")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    bad = asyncio.run(check(args.dsn or database_url("qa"), args.sample, seed))
    if bad:
        print("differ:", " ".join(map(str, bad[:100])), "..." if len(bad) > 100 else "")
        sys.exit(1)


if __name__ == "__main__":
    main()
