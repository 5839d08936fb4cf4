"""Checks the read model's tests share: the served pages against the live
query, an element as stored, which rebuild and patch functions a statement's
triggers called."""

from __future__ import annotations

import asyncpg
import orjson

from services.common.db import Database
from services.qa import queries

PAGES = [(1, 5), (2, 5), (1, 1), (3, 1), (2, 2), (1, 1000), (4, 3), (50, 5)]


async def assert_pages_match(db: Database, product_id: int) -> None:
    for page, count in PAGES:
        served = await queries.questions_page(db, product_id, page, count)
        live = await queries.questions_page_from_tables(db, product_id, page, count)
        assert served == live, (product_id, page, count)
        orjson.loads(served)  # and it is JSON


async def has_element(conn: asyncpg.Connection, question: int) -> bool:
    sql = "SELECT EXISTS (SELECT 1 FROM question_documents WHERE question_id = $1)"
    return await conn.fetchval(sql, question)


async def element_of(conn: asyncpg.Connection, question: int) -> dict:
    sql = "SELECT element FROM question_documents WHERE question_id = $1"
    return orjson.loads(await conn.fetchval(sql, question))


async def rebuilds_and_patches(conn: asyncpg.Connection, sql: str, *args: object) -> dict:
    """Runs `sql` in a transaction of its own on `conn` and counts the calls
    its triggers made to the read model's rebuild and patch functions."""
    counts = (
        "SELECT funcname, calls FROM pg_stat_xact_user_functions"
        " WHERE funcname IN"
        " ('qa_refresh_question_documents', 'qa_patch_answer_helpful', 'qa_patch_new_answer',"
        " 'qa_patch_answer_report')"
    )
    async with conn.transaction():
        await conn.execute("SET LOCAL track_functions = 'pl'")
        # The session's counters hold its earlier transactions' calls until
        # they are flushed: count the difference.
        before = {row["funcname"]: row["calls"] for row in await conn.fetch(counts)}
        await conn.execute(sql, *args)
        after = {row["funcname"]: row["calls"] for row in await conn.fetch(counts)}
    return {name: n - before.get(name, 0) for name, n in after.items() if n > before.get(name, 0)}
