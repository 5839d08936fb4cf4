"""The read model (migrations/004_read_model.sql): after a randomized series of
writes, through the API and straight into the tables, every touched
product's pages and meta served from it equal the live query's bytes; the
loader builds it for every product. Real Postgres (and, with
RUNWAY_TEST_POOLER=1, the app role through PgBouncer)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.common.db import Database, drop_database
from services.common.resources import DB
from services.reviews import queries
from services.reviews.data.generator import generate
from services.reviews.data.loader import load
from tests.conftest import PG_ADMIN_URL

# What orjson and to_json must escape alike, and what neither escapes.
AWKWARD = [
    'quote " and backslash \\ and slash /',
    "controls \b\f\n\r\t \x01\x07\x1b\x1f end",
    "DEL \x7f, line separator \u2028, paragraph \u2029",
    "astral \U0001f600\U00010348 and é ß 中文",
    "",
    "null",
    '{"json": [1, 2]}',
]
PAGES = [(1, 5), (2, 5), (1, 1), (3, 2), (1, 1000), (2, 1000), (50, 5), (1, 7)]


def awkward(rng: random.Random) -> str:
    return rng.choice(AWKWARD) + rng.choice(["", " tail", "\n"])


async def assert_same(db: Database, product_ids: set[int]) -> int:
    """Every order, several pages and the meta of each product: the read
    model's bytes == the live query's. Returns the number of comparisons."""
    checked = 0
    for pid in sorted(product_ids):
        for sort in ("newest", "helpful", "relevant"):
            for page, count in PAGES:
                got = await queries.review_page(db, pid, sort, page, count)
                want = await queries.review_page_from_tables(db, pid, sort, page, count)
                assert got == want, (pid, sort, page, count)
                checked += 1
        assert await queries.review_meta(db, pid) == await queries.review_meta_from_tables(
            db, pid
        ), pid
        checked += 1
    return checked


def review_body(rng: random.Random, product_id: int, chars: list[int]) -> dict:
    scored = rng.sample(chars, rng.randint(0, len(chars)))
    return {
        "product_id": product_id,
        "rating": rng.randint(1, 5),
        "summary": rng.choice(["", "Fine", 'A "quoted" summary \\ /', "\u2028 é 😀"]),
        "body": rng.choice(AWKWARD[:4]) + " " + "x" * rng.randint(50, 120),
        "recommend": rng.random() < 0.6,
        "name": rng.choice(["n", "Zoë", 'q"uote']),
        "email": "t@example.com",
        "photos": [
            f'https://img.example/{rng.randint(1, 99)}.jpg?a="{i}"'
            for i in range(rng.randint(0, 3))
        ],
        "characteristics": {str(c): rng.randint(1, 5) for c in scored},
    }


@pytest.mark.parametrize("seed", [1, 2])
async def test_read_model_matches_live_query_after_random_writes(
    reviews_client, reviews_conn, seed: int
) -> None:
    rng = random.Random(seed)
    conn = reviews_conn
    products = list(range(1, 9))
    chars: dict[int, list[int]] = {}
    for pid in products[:6]:
        names = rng.sample(["Fit", "Size", "Fit", 'Le"ngth', "Comfort \\", "Qualité 😀"], 3)
        chars[pid] = [
            await conn.fetchval(
                "INSERT INTO characteristics (product_id, name) VALUES ($1, $2) RETURNING id",
                pid,
                name,
            )
            for name in names
        ]
    review_ids: list[int] = []
    touched: set[int] = set(products)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    for _ in range(120):
        action = rng.random()
        if action < 0.4 or not review_ids:
            pid = rng.choice(products)
            resp = await reviews_client.post(
                "/reviews", json=review_body(rng, pid, chars.get(pid, []))
            )
            assert resp.status == 201, await resp.text()
            review_ids.append(await conn.fetchval("SELECT max(id) FROM reviews"))
        elif action < 0.6:
            resp = await reviews_client.put(f"/reviews/{rng.choice(review_ids)}/helpful")
            assert resp.status == 204
        elif action < 0.7:
            resp = await reviews_client.put(f"/reviews/{rng.choice(review_ids)}/report")
            assert resp.status == 204
        elif action < 0.8:
            # Straight into the tables: awkward text, a NULL or '' response,
            # dates that tie (the orders' last key, id, decides).
            await conn.execute(
                "UPDATE reviews SET summary = $2, body = $3, reviewer_name = $4, response = $5,"
                " date = $6 WHERE id = $1",
                rng.choice(review_ids),
                awkward(rng),
                awkward(rng),
                awkward(rng),
                rng.choice([None, "", awkward(rng)]),
                base + timedelta(milliseconds=rng.choice([0, 1, 999, 86_400_000])),
            )
        elif action < 0.9:
            await conn.execute(
                "INSERT INTO reviews_photos (review_id, url) VALUES ($1, $2)",
                rng.choice(review_ids),
                rng.choice([None, awkward(rng), "https://x/\u2028.jpg"]),
            )
        else:
            # Helpfulness ties and a characteristic renamed to an awkward name.
            await conn.execute(
                "UPDATE reviews SET helpfulness = $2 WHERE id = $1",
                rng.choice(review_ids),
                rng.choice([0, 1, 2]),
            )
            pid = rng.choice(products[:6])
            await conn.execute(
                "UPDATE characteristics SET name = $2 WHERE id = $1",
                rng.choice(chars[pid]),
                awkward(rng),
            )
    # A photo deleted and a review deleted, straight in the tables.
    await conn.execute("DELETE FROM reviews_photos WHERE id = (SELECT min(id) FROM reviews_photos)")
    await conn.execute("DELETE FROM reviews WHERE id = $1", rng.choice(review_ids))

    db = reviews_client.app[DB]
    checked = await assert_same(db, touched | {999})  # 999: never written
    assert checked == 9 * (3 * len(PAGES) + 1)
    # The documents exist (an absent one would read as an empty answer).
    assert await conn.fetchval("SELECT count(*) FROM review_lists") == 2 * await conn.fetchval(
        "SELECT count(DISTINCT product_id) FROM reviews WHERE NOT reported"
    )
    # Through the route too (views wired to the read model; cold cache).
    for pid in (1, 2):
        resp = await reviews_client.get(f"/reviews/?product_id={pid}&count=1000&sort=newest")
        assert await resp.read() == await queries.review_page_from_tables(
            db, pid, "newest", 1, 1000
        )
        resp = await reviews_client.get(f"/reviews/meta?product_id={pid}")
        assert await resp.read() == await queries.review_meta_from_tables(db, pid)


async def test_a_product_whose_reviews_are_all_reported_has_no_list(
    reviews_client, reviews_conn
) -> None:
    rng = random.Random(3)
    resp = await reviews_client.post("/reviews", json=review_body(rng, 5, []))
    assert resp.status == 201
    rid = await reviews_conn.fetchval("SELECT max(id) FROM reviews")
    assert await reviews_conn.fetchval("SELECT count(*) FROM review_lists") == 2
    assert (await reviews_client.put(f"/reviews/{rid}/report")).status == 204
    assert await reviews_conn.fetchval("SELECT count(*) FROM review_lists") == 0
    db = reviews_client.app[DB]
    await assert_same(db, {5})
    await reviews_conn.execute("DELETE FROM product_ratings")
    assert await reviews_conn.fetchval("SELECT count(*) FROM review_meta_docs") == 0
    await assert_same(db, {5})


async def test_one_write_in_a_transaction_of_several_statements(reviews_client, reviews_conn):
    """The documents follow the transaction: a rolled-back write leaves them
    as they were, a committed one of several statements is in them."""
    rng = random.Random(4)
    resp = await reviews_client.post("/reviews", json=review_body(rng, 7, []))
    assert resp.status == 201
    before = await reviews_conn.fetch("SELECT * FROM review_lists ORDER BY 1, 2")
    tx = reviews_conn.transaction()
    await tx.start()
    await reviews_conn.execute("UPDATE reviews SET helpfulness = 40")
    await reviews_conn.execute("UPDATE reviews SET body = 'changed'")
    await tx.rollback()
    assert await reviews_conn.fetch("SELECT * FROM review_lists ORDER BY 1, 2") == before
    async with reviews_conn.transaction():
        await reviews_conn.execute("UPDATE reviews SET helpfulness = 40")
        await reviews_conn.execute("UPDATE reviews SET body = 'changed \"'")
    assert await reviews_conn.fetch("SELECT * FROM review_lists ORDER BY 1, 2") != before
    await assert_same(reviews_client.app[DB], {7})


async def test_concurrent_writes_to_one_product_both_reach_its_documents(
    reviews_client, reviews_conn, connect, reviews_db
) -> None:
    """The second writer's trigger waits for the first's commit and builds from
    a snapshot with both writes: neither vote is lost from the documents."""
    rng = random.Random(6)
    for _ in range(2):
        resp = await reviews_client.post("/reviews", json=review_body(rng, 8, []))
        assert resp.status == 201
    first, second = [r[0] for r in await reviews_conn.fetch("SELECT id FROM reviews ORDER BY id")]
    other = await connect(reviews_db)
    tx = reviews_conn.transaction()
    await tx.start()
    await reviews_conn.execute("UPDATE reviews SET helpfulness = 5 WHERE id = $1", first)
    other_pid = await other.fetchval("SELECT pg_backend_pid()")
    blocked = asyncio.create_task(
        other.execute("UPDATE reviews SET helpfulness = 9 WHERE id = $1", second)
    )
    # Wait (an event, not a sleep) until the second writer waits on a lock.
    while not await reviews_conn.fetchval(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", other_pid
    ):
        assert not blocked.done(), "the second write did not wait for the first"
        await asyncio.sleep(0.01)
    await tx.commit()
    await blocked
    await assert_same(reviews_client.app[DB], {8})
    page = await queries.review_page(reviews_client.app[DB], 8, "helpful", 1, 5)
    assert page.count(b'"helpfulness":9') == 1 and page.count(b'"helpfulness":5') == 1


async def test_a_review_with_photos_and_scores_rebuilds_each_document_once(
    reviews_client, reviews_conn
) -> None:
    """INSERT_REVIEW fires the triggers of four tables; the second list and
    meta refresh of the statement skip the product the first one built."""
    conn = reviews_conn
    chars = [
        await conn.fetchval(
            "INSERT INTO characteristics (product_id, name) VALUES (3, $1) RETURNING id", name
        )
        for name in ("Fit", "Size")
    ]
    resp = await reviews_client.post("/reviews", json=review_body(random.Random(7), 3, []))
    assert resp.status == 201  # product_ratings has its row: the next one is an update
    # The session's not yet flushed counters (earlier transactions' too),
    # read before and after, inside one transaction: no flush in between.
    counts = """
        SELECT array_agg(n_tup_ins + n_tup_upd ORDER BY relname) FROM pg_stat_xact_user_tables
        WHERE relname IN ('review_lists', 'review_meta_docs')"""
    async with conn.transaction():
        before = await conn.fetchval(counts) or [0, 0]
        await conn.fetchrow(
            queries.INSERT_REVIEW,
            3,
            5,
            "s",
            "b" * 60,
            True,
            "n",
            "e@example.com",
            ["https://img.example/1.jpg", "https://img.example/2.jpg"],
            chars,
            [4, 2],
        )
        after = await conn.fetchval(counts)
    # newest and helpful once each (not twice), the meta once (not twice)
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1]
    await assert_same(reviews_client.app[DB], {3})


async def test_a_long_list_keeps_its_first_100_and_pages_past_them_are_live(
    reviews_client, reviews_conn
) -> None:
    """Each order keeps its first 100 elements; a page within them is cut from
    the document, a page past them (or across the edge) answered live: all
    equal to the live query. A write moves a review into the first 100."""
    conn = reviews_conn
    await conn.execute(
        """
        WITH r AS (
            INSERT INTO reviews (product_id, rating, date, summary, body, recommend,
                                 reviewer_name, reviewer_email, helpfulness)
            SELECT 4, 1 + i % 5, '2024-01-01'::timestamptz + (i % 97) * interval '1 hour',
                   's' || i, 'body "' || i || '"', i % 2 = 0, 'n', 'e@x.y', i % 7
            FROM generate_series(1, 260) i
            RETURNING id
        )
        INSERT INTO reviews_photos (review_id, url)
        SELECT id, CASE WHEN id % 2 = 0 THEN 'https://x/' || id END FROM r WHERE id % 3 = 0
        """
    )
    rows = await conn.fetch(
        "SELECT sort_key, cardinality(ends), complete FROM review_lists"
        " WHERE product_id = 4 ORDER BY 1"
    )
    assert [tuple(r) for r in rows] == [("helpful", 100, False), ("newest", 100, False)]
    db = reviews_client.app[DB]
    pages = [(1, 5), (1, 100), (2, 50), (1, 101), (3, 50), (1, 1000), (20, 5), (21, 5), (53, 5)]
    for sort in ("newest", "helpful", "relevant"):
        for page, count in pages:
            got = await queries.review_page(db, 4, sort, page, count)
            assert got == await queries.review_page_from_tables(db, 4, sort, page, count)
    # The least helpful review voted to the top: in the helpful list now.
    last = await conn.fetchval(
        "SELECT id FROM reviews WHERE product_id = 4 ORDER BY helpfulness, date, id LIMIT 1"
    )
    assert (await reviews_client.put(f"/reviews/{last}/helpful")).status == 204
    await conn.execute("UPDATE reviews SET helpfulness = 100 WHERE id = $1", last)
    first = await queries.review_page(db, 4, "helpful", 1, 1)
    assert f'"review_id":{last},'.encode() in first
    await assert_same(db, {4})
    # Reported down to 100: complete again.
    await conn.execute(
        "UPDATE reviews SET reported = true WHERE id IN (SELECT id FROM reviews"
        " WHERE product_id = 4 ORDER BY id LIMIT 160)"
    )
    assert await conn.fetchval("SELECT bool_and(complete) FROM review_lists WHERE product_id = 4")
    await assert_same(db, {4})


# ---------------------------------------------------------------- the loader


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/test_rm_{uuid.uuid4().hex[:10]}"
    yield url
    asyncio.run(drop_database(url))


class _Direct:
    """Database's read_* on one asyncpg connection (what queries.py calls)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def read_fetch(self, sql: str, *args):
        return await self.conn.fetch(sql, *args)

    async def read_fetchval(self, sql: str, *args):
        return await self.conn.fetchval(sql, *args)

    async def read_fetchrow(self, sql: str, *args):
        return await self.conn.fetchrow(sql, *args)


async def test_loader_builds_every_document(db_url: str, tmp_path: Path) -> None:
    generate(tmp_path / "data", scale=0.001, seed=5)
    report = await load(db_url, tmp_path / "data", tmp_path / "report", quiet=True)
    assert "read_model" in report["steps"]
    conn = await asyncpg.connect(db_url)
    try:
        listed = await conn.fetchval(
            "SELECT count(DISTINCT product_id) FROM reviews WHERE NOT reported"
        )
        assert listed > 100
        assert await conn.fetchval("SELECT count(*) FROM review_lists") == 2 * listed
        assert await conn.fetchval("SELECT count(*) FROM review_meta_docs") == await conn.fetchval(
            "SELECT count(*) FROM (SELECT product_id FROM product_ratings"
            " UNION SELECT product_id FROM characteristics) p"
        )
        # The triggers are on again once the load committed.
        states = await conn.fetch(
            "SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgname LIKE 'read\\_model\\_%'"
        )
        assert len(states) == 12 and {s[1] for s in states} == {"O"}
        products = [r[0] for r in await conn.fetch("SELECT DISTINCT product_id FROM reviews")]
        sample = set(random.Random(5).sample(products, 60)) | {max(products) + 1}
        await assert_same(_Direct(conn), sample)  # type: ignore[arg-type]
        # A write after the load goes through the triggers again.
        pid = sample.pop()
        await conn.execute(
            "UPDATE reviews SET helpfulness = helpfulness + 7, body = 'after \"load\"'"
            " WHERE id = (SELECT max(id) FROM reviews WHERE product_id = $1)",
            pid,
        )
        await assert_same(_Direct(conn), {pid})
    finally:
        await conn.close()
