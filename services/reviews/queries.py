"""Every SQL statement of the reviews service, and the shaping of rows into
ready-to-send response bytes."""

from __future__ import annotations

from collections.abc import Awaitable

import asyncpg
import orjson

from services.common.db import Database

from .schemas import NewReview

_ISO_MS = """to_char(date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""

# Each order ends in id DESC so that pages are stable; each has a matching
# partial index (002_indexes.sql). `relevant` is defined as `helpful`.
ORDERS: dict[str, str] = {
    "newest": "date DESC, id DESC",
    "helpful": "helpfulness DESC, date DESC, id DESC",
    "relevant": "helpfulness DESC, date DESC, id DESC",
}


def _page_range(columns: str, order: str) -> str:
    """The page's reviews by index: the one range both page queries read."""
    return f"""(
    SELECT {columns}
    FROM reviews
    WHERE product_id = $1 AND NOT reported
    ORDER BY {order}
    LIMIT $2 OFFSET $3
) r"""


def _page_sql(order: str) -> str:
    """A page as the comma-joined elements of "results", one bytea: each
    review's stored head (004_review_elements.sql), its vote count, its
    photos' elements stored in its row (005_photo_elements.sql). NULL when
    the page is empty."""
    return f"""
SELECT convert_to(string_agg(
           r.element_head || r.helpfulness::text || ',"photos":['
           || coalesce(r.photo_elements, '') || ']}}', ',' ORDER BY {order}), 'UTF8')
FROM {_page_range("id, element_head, helpfulness, date, photo_elements", order)}
"""


def _page_rows_sql(order: str) -> str:
    """The page's rows, column by column: the reference the stored elements
    are checked against (tests/reviews/test_review_elements.py)."""
    columns = (
        f"id, rating, summary, recommend, response, body, {_ISO_MS} AS date_text,"
        " reviewer_name, helpfulness, date"
    )
    return f"""
SELECT r.id, r.rating, r.summary, r.recommend, r.response, r.body, r.date_text,
       r.reviewer_name, r.helpfulness, p.ids, p.urls
FROM {_page_range(columns, order)}
LEFT JOIN LATERAL (
    SELECT array_agg(ph.id ORDER BY ph.id) AS ids, array_agg(ph.url ORDER BY ph.id) AS urls
    FROM reviews_photos ph WHERE ph.review_id = r.id
) p ON true
ORDER BY {order}
"""


PAGE_SQL: dict[str, str] = {sort: _page_sql(order) for sort, order in ORDERS.items()}
PAGE_ROWS_SQL: dict[str, str] = {sort: _page_rows_sql(order) for sort, order in ORDERS.items()}

META_SQL = """
SELECT pr.r1, pr.r2, pr.r3, pr.r4, pr.r5, pr.recommend_false, pr.recommend_true,
       c.id, c.name,
       CASE WHEN c.score_count > 0
            THEN round(c.score_sum::numeric / c.score_count, 16)::text END AS value
FROM (SELECT $1::integer AS product_id) k
LEFT JOIN product_ratings pr ON pr.product_id = k.product_id
LEFT JOIN characteristics c ON c.product_id = k.product_id
ORDER BY c.id
"""

# The review, its photos, its scores and both aggregates in one statement: one
# round trip, and one transaction (Postgres runs a statement atomically). It
# first looks for a scored characteristic that is not the product's; if there
# is one, nothing is written (every insert and update hangs off review_id or
# new_review, then empty) and the smallest such id comes back for the 422.
# With photos, the review's id is drawn first so that its photos go in before
# it, and the review's row is written once, with its photos' stored elements
# (migrations/005_photo_elements.sql: the photos' trigger finds them there
# and writes nothing more). Returns (foreign_id, review_id, outbox_id):
# foreign_id NULL exactly when written.
# Every write also records the cache scopes it changes in cache_outbox, in the
# same statement (services/common/outbox.py): the row's id comes back for the
# writer to acknowledge once its invalidation went through.
_INSERT_REVIEW = """
WITH foreign_score AS (
    SELECT min(s.characteristic_id) AS id
    FROM unnest($8::integer[]) AS s(characteristic_id)
    WHERE NOT EXISTS (
        SELECT 1 FROM characteristics c
        WHERE c.id = s.characteristic_id AND c.product_id = $1::integer
    )
){review}, new_scores AS (
    INSERT INTO characteristic_reviews (characteristic_id, review_id, value)
    SELECT s.characteristic_id, new_review.id, s.value
    FROM new_review, unnest($8::integer[], $9::smallint[]) AS s(characteristic_id, value)
), totals AS (
    UPDATE characteristics c
    SET score_sum = c.score_sum + s.value, score_count = c.score_count + 1
    FROM new_review, unnest($8::integer[], $9::smallint[]) AS s(characteristic_id, value)
    WHERE c.id = s.characteristic_id
), ratings AS (
    INSERT INTO product_ratings AS pr
        (product_id, r1, r2, r3, r4, r5, recommend_false, recommend_true)
    SELECT $1::integer, ($2::smallint = 1)::int, ($2::smallint = 2)::int,
           ($2::smallint = 3)::int, ($2::smallint = 4)::int, ($2::smallint = 5)::int,
           (NOT $5::boolean)::int, $5::boolean::int
    FROM new_review
    ON CONFLICT (product_id) DO UPDATE SET
        r1 = pr.r1 + EXCLUDED.r1, r2 = pr.r2 + EXCLUDED.r2, r3 = pr.r3 + EXCLUDED.r3,
        r4 = pr.r4 + EXCLUDED.r4, r5 = pr.r5 + EXCLUDED.r5,
        recommend_false = pr.recommend_false + EXCLUDED.recommend_false,
        recommend_true = pr.recommend_true + EXCLUDED.recommend_true
), outbox AS (
    INSERT INTO cache_outbox (scopes) SELECT ARRAY['p:' || $1::integer] FROM new_review
    RETURNING id
)
SELECT (SELECT id FROM foreign_score) AS foreign_id, (SELECT id FROM new_review) AS review_id,
       (SELECT id FROM outbox) AS outbox_id
"""
INSERT_REVIEW = _INSERT_REVIEW.format(
    review="""
, review_id AS (
    SELECT nextval(pg_get_serial_sequence('reviews', 'id'))::integer AS id
    FROM foreign_score
    WHERE foreign_score.id IS NULL
), new_photos AS (
    INSERT INTO reviews_photos (review_id, url)
    SELECT review_id.id, u.url FROM review_id, unnest($10::text[]) WITH ORDINALITY AS u(url, n)
    ORDER BY u.n
    RETURNING id, element
), new_review AS (
    INSERT INTO reviews (id, product_id, rating, summary, body, recommend, reviewer_name,
                         reviewer_email, photo_elements)
    SELECT review_id.id, $1::integer, $2::smallint, $3::text, $4::text, $5::boolean, $6::text,
           $7::text, (SELECT string_agg(element, ',' ORDER BY id) FROM new_photos)
    FROM review_id
    RETURNING id
)"""
)
# Most reviews come without photos: then the statement does not touch
# reviews_photos at all, and draws no id ahead (the qa service does the same
# for answers, decision 0039).
INSERT_REVIEW_NO_PHOTOS = _INSERT_REVIEW.format(
    review=""", new_review AS (
    INSERT INTO reviews (product_id, rating, summary, body, recommend, reviewer_name,
                         reviewer_email)
    SELECT $1::integer, $2::smallint, $3::text, $4::text, $5::boolean, $6::text, $7::text
    FROM foreign_score
    WHERE foreign_score.id IS NULL
    RETURNING id
)"""
)

# Scopes as views.product_scope names them; tests/common/test_outbox.py
# fails for any write whose outbox scopes miss what its reads cache.
_OUTBOX = """
outbox AS (
    INSERT INTO cache_outbox (scopes) SELECT ARRAY['p:' || product_id] FROM target RETURNING id
)"""

# (product_id, outbox_id), no row when no such review.
MARK_HELPFUL = f"""
WITH target AS (
    UPDATE reviews SET helpfulness = helpfulness + 1 WHERE id = $1 RETURNING product_id
), {_OUTBOX}
SELECT target.product_id, outbox.id FROM target, outbox
"""

# Hide the review and subtract it from the aggregates, once: a second report
# (or a concurrent one, re-checked under the row lock) changes nothing. The
# final SELECT reads the pre-statement snapshot, so it finds the review
# whether or not this statement reported it. (product_id, outbox_id; NULL when
# this statement changed nothing), no row when no such review.
REPORT = f"""
WITH target AS (
    UPDATE reviews SET reported = true
    WHERE id = $1 AND NOT reported
    RETURNING product_id, rating, recommend
), ratings AS (
    UPDATE product_ratings pr SET
        r1 = pr.r1 - (t.rating = 1)::int, r2 = pr.r2 - (t.rating = 2)::int,
        r3 = pr.r3 - (t.rating = 3)::int, r4 = pr.r4 - (t.rating = 4)::int,
        r5 = pr.r5 - (t.rating = 5)::int,
        recommend_false = pr.recommend_false - (NOT t.recommend)::int,
        recommend_true = pr.recommend_true - t.recommend::int
    FROM target t WHERE pr.product_id = t.product_id
), scores AS (
    UPDATE characteristics c
    SET score_sum = c.score_sum - cr.value, score_count = c.score_count - 1
    FROM characteristic_reviews cr, target t
    WHERE cr.review_id = $1 AND c.id = cr.characteristic_id
), {_OUTBOX}
SELECT product_id, (SELECT id FROM outbox) FROM reviews WHERE id = $1
"""


# --- writes ----------------------------------------------------------------------
# Each write is one statement, so one transaction. These return the statement's
# awaitable itself (no coroutine of their own): the write path costs what it
# did when the views ran the SQL. Writes go through db.write_* (with read
# replicas, that records the commit's WAL position for the invalidation),
# reads through db.read_* (with read replicas, run where the cache says:
# services/common/replicas.py).


def add_review(
    db: Database, review: NewReview, scores: dict[int, int]
) -> Awaitable[asyncpg.Record | None]:
    """Write the review, its photos, its characteristic `scores` (id: value) and
    both aggregates. Resolves to (foreign_id, review_id, outbox_id): foreign_id
    None once written, or, writing nothing, the smallest scored characteristic
    id that is not one of the product's."""
    args = (
        review.product_id,
        review.rating,
        review.summary,
        review.body,
        review.recommend,
        review.name,
        review.email,
        list(scores),
        list(scores.values()),
    )
    if not review.photos:
        return db.write_fetchrow(INSERT_REVIEW_NO_PHOTOS, *args)
    return db.write_fetchrow(INSERT_REVIEW, *args, review.photos)


def mark_helpful(db: Database, review_id: int) -> Awaitable[asyncpg.Record | None]:
    """One more helpful vote; resolves to (product_id, outbox_id), None when no such review."""
    return db.write_fetchrow(MARK_HELPFUL, review_id)


def report(db: Database, review_id: int) -> Awaitable[asyncpg.Record | None]:
    """Hide the review (once); resolves to (product_id, outbox_id; None when it
    was hidden already), None when no such review."""
    return db.write_fetchrow(REPORT, review_id)


# --- reads ------------------------------------------------------------------------


def _photos(ids: list[int] | None, urls: list[str | None] | None) -> list[dict]:
    if not ids:
        return []
    return [{"id": i, "url": u} for i, u in zip(ids, urls or (), strict=True)]


async def review_page(db: Database, product_id: int, sort: str, page: int, count: int) -> bytes:
    """GET /reviews/'s body: the stored elements joined in SQL, wrapped here."""
    results = await db.read_fetchval(PAGE_SQL[sort], product_id, count, (page - 1) * count)
    return b'{"product":"%d","page":%d,"count":%d,"results":[%s]}' % (
        product_id,
        page - 1,
        count,
        results or b"",
    )


async def review_page_from_tables(
    db: Database, product_id: int, sort: str, page: int, count: int
) -> bytes:
    """The same body from the columns, folded here: the reference."""
    rows = await db.read_fetch(PAGE_ROWS_SQL[sort], product_id, count, (page - 1) * count)
    results = [
        {
            "review_id": r[0],
            "rating": r[1],
            "summary": r[2],
            "recommend": r[3],
            "response": r[4],
            "body": r[5],
            "date": r[6],
            "reviewer_name": r[7],
            "helpfulness": r[8],
            "photos": _photos(r[9], r[10]),
        }
        for r in rows
    ]
    return orjson.dumps(
        {"product": str(product_id), "page": page - 1, "count": count, "results": results}
    )


_RATING_KEYS = ("1", "2", "3", "4", "5")


async def review_meta(db: Database, product_id: int) -> bytes:
    rows = await db.read_fetch(META_SQL, product_id)
    first = rows[0]  # the LEFT JOINs always yield at least one row
    ratings = {k: str(n) for k, n in zip(_RATING_KEYS, first[0:5], strict=True) if n}
    recommended = {k: str(n) for k, n in (("false", first[5]), ("true", first[6])) if n}
    characteristics: dict[str, dict] = {}
    for row in rows:
        if row[7] is not None and row[8] not in characteristics:
            characteristics[row[8]] = {"id": row[7], "value": row[9]}
    return orjson.dumps(
        {
            "product_id": str(product_id),
            "ratings": ratings,
            "recommended": recommended,
            "characteristics": characteristics,
        }
    )
