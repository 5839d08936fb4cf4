"""The stored review elements (migrations/004_review_elements.sql): after a
randomized series of writes, through the API and straight into the tables,
every page GET /reviews/ builds from them equals, byte for byte, the page
folded from the columns (queries.review_page_from_tables); the loader fills
them for every row it loads. Real Postgres (and, with RUNWAY_TEST_POOLER=1,
the app role through PgBouncer)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.common.db import drop_database
from services.common.resources import DB
from services.reviews import queries
from services.reviews.data.generator import generate
from services.reviews.data.loader import load
from tests.conftest import PG_ADMIN_URL
from tests.stored_photos import photos_written_at_once, recompute_calls

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
SORTS = ("newest", "helpful", "relevant")


def awkward(rng: random.Random) -> str:
    return rng.choice(AWKWARD) + rng.choice(["", " tail", "\n"])


async def assert_same(db, product_ids: set[int]) -> int:
    """Every order and several pages of each product: the stored elements'
    page == the folded one. Returns the number of comparisons."""
    checked = 0
    for pid in sorted(product_ids):
        for sort in SORTS:
            for page, count in PAGES:
                got = await queries.review_page(db, pid, sort, page, count)
                want = await queries.review_page_from_tables(db, pid, sort, page, count)
                assert got == want, (pid, sort, page, count)
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
async def test_stored_elements_match_the_columns_after_random_writes(
    reviews_client, reviews_conn, seed: int
) -> None:
    rng = random.Random(seed)
    conn = reviews_conn
    products = list(range(1, 9))
    chars = {
        pid: [
            await conn.fetchval(
                "INSERT INTO characteristics (product_id, name) VALUES ($1, $2) RETURNING id",
                pid,
                name,
            )
            for name in ("Fit", "Size")
        ]
        for pid in products[:6]
    }
    review_ids: list[int] = []
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
            # Helpfulness ties, and a photo's url changed in place.
            await conn.execute(
                "UPDATE reviews SET helpfulness = $2 WHERE id = $1",
                rng.choice(review_ids),
                rng.choice([0, 1, 2]),
            )
            await conn.execute(
                "UPDATE reviews_photos SET url = $1"
                " WHERE id = (SELECT max(id) FROM reviews_photos)",
                awkward(rng),
            )
    # A photo deleted and a review deleted, straight in the tables.
    await conn.execute("DELETE FROM reviews_photos WHERE id = (SELECT min(id) FROM reviews_photos)")
    await conn.execute("DELETE FROM reviews WHERE id = $1", rng.choice(review_ids))
    # The series reached what it is meant to compare.
    assert await conn.fetchval("SELECT count(*) FROM reviews_photos") > 10
    assert await conn.fetchval("SELECT count(*) FROM reviews WHERE reported") > 0

    db = reviews_client.app[DB]
    checked = await assert_same(db, set(products) | {999})  # 999: never written
    assert checked == 9 * len(SORTS) * len(PAGES)
    # Through the route too (the view reads the stored elements; cold cache).
    for pid in (1, 2):
        resp = await reviews_client.get(f"/reviews/?product_id={pid}&count=1000&sort=newest")
        assert await resp.read() == await queries.review_page_from_tables(
            db, pid, "newest", 1, 1000
        )


async def test_a_vote_changes_the_page_without_rewriting_the_element(
    reviews_client, reviews_conn
) -> None:
    """The vote count is read from its column: a helpful vote moves the review
    in the helpful order and shows its new count, and the stored head (which
    ends at `"helpfulness":`) is the same bytes before and after."""
    rng = random.Random(3)
    for _ in range(3):
        resp = await reviews_client.post("/reviews", json=review_body(rng, 5, []))
        assert resp.status == 201
    last = await reviews_conn.fetchval("SELECT max(id) FROM reviews")
    head = await reviews_conn.fetchval("SELECT element_head FROM reviews WHERE id = $1", last)
    assert head.endswith('"helpfulness":')
    for _ in range(2):
        assert (await reviews_client.put(f"/reviews/{last}/helpful")).status == 204
    assert (
        await reviews_conn.fetchval("SELECT element_head FROM reviews WHERE id = $1", last) == head
    )
    db = reviews_client.app[DB]
    first = await queries.review_page(db, 5, "helpful", 1, 1)
    assert first.startswith(b'{"product":"5","page":0,"count":1,"results":[' + head.encode())
    assert b'"helpfulness":2,"photos":[]}]}' in first
    await assert_same(db, {5})


async def test_a_page_of_a_long_product_crosses_pages_alike(reviews_client, reviews_conn) -> None:
    """260 reviews, ties in date and helpfulness, photos on a third of them
    (a NULL url on half of those): every page of every order alike."""
    await reviews_conn.execute(
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
    db = reviews_client.app[DB]
    pages = [(1, 5), (1, 100), (2, 50), (1, 101), (3, 50), (1, 1000), (20, 5), (53, 5), (54, 5)]
    for sort in SORTS:
        for page, count in pages:
            got = await queries.review_page(db, 4, sort, page, count)
            assert got == await queries.review_page_from_tables(db, 4, sort, page, count)
    assert b'"url":null' in await queries.review_page(db, 4, "newest", 1, 1000)


async def test_photos_written_at_once_to_one_review_are_all_kept(
    reviews_client, connect, reviews_db
) -> None:
    """Two transactions add a photo to the same review at once: the second's
    trigger waits for the first's row lock and then reads both photos, so the
    review's stored photos (005_photo_elements.sql) hold both, in id order."""
    rng = random.Random(4)
    assert (await reviews_client.post("/reviews", json=review_body(rng, 6, []))).status == 201
    rid = await reviews_client.app[DB].read_fetchval("SELECT max(id) FROM reviews")
    stored = await photos_written_at_once(connect, reviews_db, "reviews", rid)
    assert stored.count('"url":') == 2, stored
    assert stored.index('"url":"a"') < stored.index('"url":"b"')
    await assert_same(reviews_client.app[DB], {6})


async def test_a_posted_review_writes_its_photos_once(reviews_client, reviews_conn) -> None:
    """The POST's statement stores the photos with the review, so the trigger
    recomputes nothing; a photo added by hand is recomputed; both pages
    equal the tables'."""
    urls = ["https://x/a.jpg", 'https://x/"b".jpg', None]
    args = (3, 5, "s", "b" * 60, True, "n", "e@x.y", [], [], urls)
    refresh = "reviews_refresh_photo_elements"
    assert await recompute_calls(reviews_conn, refresh, queries.INSERT_REVIEW, *args) == 0
    rid = await reviews_conn.fetchval("SELECT max(id) FROM reviews")
    stored = await reviews_conn.fetchval("SELECT photo_elements FROM reviews WHERE id = $1", rid)
    assert stored.count('"url":') == 3
    insert = "INSERT INTO reviews_photos (review_id, url) VALUES ($1, 'https://x/c.jpg')"
    assert await recompute_calls(reviews_conn, refresh, insert, rid) == 1
    await assert_same(reviews_client.app[DB], {3})


async def test_photos_truncated_leave_no_stored_photos(reviews_client, reviews_conn) -> None:
    rng = random.Random(5)
    body = {**review_body(rng, 7, []), "photos": ["https://x/1.jpg", "https://x/2.jpg"]}
    assert (await reviews_client.post("/reviews", json=body)).status == 201
    db = reviews_client.app[DB]
    assert b'"url":"https://x/2.jpg"' in await queries.review_page(db, 7, "newest", 1, 5)
    await reviews_conn.execute("TRUNCATE reviews_photos")
    assert b'"photos":[]' in await queries.review_page(db, 7, "newest", 1, 5)
    await assert_same(db, {7})


# ---------------------------------------------------------------- the loader


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/test_re_{uuid.uuid4().hex[:10]}"
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


async def test_the_loader_fills_every_element(db_url: str, tmp_path: Path) -> None:
    generate(tmp_path / "data", scale=0.001, seed=5)
    await load(db_url, tmp_path / "data", tmp_path / "report", quiet=True)
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM reviews") > 100
        assert await conn.fetchval("SELECT count(*) FROM reviews WHERE element_head IS NULL") == 0
        assert await conn.fetchval("SELECT count(*) FROM reviews_photos") > 10
        assert await conn.fetchval("SELECT count(*) FROM reviews_photos WHERE element IS NULL") == 0
        products = [r[0] for r in await conn.fetch("SELECT DISTINCT product_id FROM reviews")]
        sample = set(random.Random(5).sample(products, 60)) | {max(products) + 1}
        await assert_same(_Direct(conn), sample)
    finally:
        await conn.close()
