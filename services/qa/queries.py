"""Every SQL statement of the qa service, and the shaping of rows into
ready-to-send response bytes.

Each read is one statement, so one round trip. Both lists are read from the
elements each question and answer row stores (generated columns,
migrations/008_answer_elements.sql and 013_question_elements_stored.sql),
joined in SQL into the page's ready bytes: nothing is decoded or encoded
here. Their references, questions_page_from_tables and
answers_page_from_tables, read the same pages column by column and fold the
rows with orjson; the tests compare the two byte for byte."""

from __future__ import annotations

from collections.abc import Awaitable

import asyncpg
import orjson

from services.common.db import Database

from .schemas import NewAnswer, NewQuestion

_ISO_MS = """'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"""

# Reported questions and answers never match the partial indexes' predicate.
# Photos with a NULL url (the export has a few) are left out of this list of
# URL strings: a null is not a URL; the answers route shows them as {id, url}.
QUESTIONS_PAGE_ROWS = f"""
SELECT q.id, q.body, to_char(q.date_written AT TIME ZONE 'UTC', {_ISO_MS}), q.asker_name,
       q.helpful,
       a.id, a.body, to_char(a.date_written AT TIME ZONE 'UTC', {_ISO_MS}), a.answerer_name,
       a.helpful, ap.urls
FROM (
    SELECT id, body, date_written, asker_name, helpful
    FROM questions
    WHERE product_id = $1 AND NOT reported
    ORDER BY helpful DESC, id DESC
    LIMIT $2 OFFSET $3
) q
LEFT JOIN answers a ON a.question_id = q.id AND NOT a.reported
LEFT JOIN LATERAL (
    SELECT array_agg(ph.url ORDER BY ph.id) AS urls
    FROM answers_photos ph
    WHERE ph.answer_id = a.id AND ph.url IS NOT NULL
) ap ON true
ORDER BY q.helpful DESC, q.id DESC, a.helpful DESC, a.id DESC
"""

# A page of questions as the comma-joined elements of "results", one bytea:
# the product's visible questions by questions_product_helpful_idx, each its
# stored head (013), its vote count and its visible answers by
# answers_question_helpful_idx as members of "answers": each answer's stored
# head (008) re-keyed for this list (`"<id>":{"id":<id>,...` where the
# answers page has `{"answer_id":<id>,...`: the head starts with the 13
# bytes `{"answer_id":`), its vote count and its photos' url strings. Only an
# answer whose stored photo_elements (011) names photos probes
# answers_photos; a NULL url is left out, as in the reference. NULL: an
# empty page.
QUESTIONS_PAGE = """
SELECT convert_to(string_agg(
           q.element_head || q.helpful || ',"reported":false,"answers":{'
           || coalesce(m.members, '') || '}}', ',' ORDER BY q.helpful DESC, q.id DESC), 'UTF8')
FROM (
    SELECT id, element_head, helpful
    FROM questions
    WHERE product_id = $1 AND NOT reported
    ORDER BY helpful DESC, id DESC
    LIMIT $2 OFFSET $3
) q
LEFT JOIN LATERAL (
    SELECT string_agg(
               '"' || a.id || '":{"id":' || substr(a.element_head, 14) || a.helpful
               || ',"photos":[' || CASE WHEN a.photo_elements IS NULL THEN '' ELSE coalesce((
                   SELECT string_agg(to_json(ph.url)::text, ',' ORDER BY ph.id)
                   FROM answers_photos ph
                   WHERE ph.answer_id = a.id AND ph.url IS NOT NULL), '') END
               || ']}', ',' ORDER BY a.helpful DESC, a.id DESC) AS members
    FROM answers a
    WHERE a.question_id = q.id AND NOT a.reported
) m ON true
"""

# The page's answers by index: the one range both answers queries read.
_ANSWERS_RANGE = """
    FROM answers
    WHERE question_id = q.id AND NOT reported
    ORDER BY helpful DESC, id DESC
    LIMIT $2 OFFSET $3"""

# A page of answers as the comma-joined elements of "results", one bytea:
# each answer's stored head (008_answer_elements.sql), its vote count, its
# photos' stored elements (011_answer_photo_elements.sql). The question's own
# row decides 404 (no row at all) versus an empty page (''); a reported
# question still exists (it is only hidden from the questions list), so its
# answers are served.
ANSWERS_PAGE = f"""
SELECT convert_to(coalesce(string_agg(
           a.element_head || a.helpful::text || ',"photos":[' || coalesce(a.photo_elements, '')
           || ']}}', ',' ORDER BY a.helpful DESC, a.id DESC), ''), 'UTF8')
FROM questions q
LEFT JOIN LATERAL (SELECT id, element_head, helpful, photo_elements {_ANSWERS_RANGE}) a ON true
WHERE q.id = $1
GROUP BY q.id
"""

# The same page's rows, column by column: the reference the stored elements
# are checked against (tests/qa/test_answer_elements.py).
ANSWERS_PAGE_ROWS = f"""
SELECT a.id, a.body, to_char(a.date_written AT TIME ZONE 'UTC', {_ISO_MS}), a.answerer_name,
       a.helpful, ap.ids, ap.urls
FROM questions q
LEFT JOIN LATERAL (
    SELECT id, body, date_written, answerer_name, helpful {_ANSWERS_RANGE}
) a ON true
LEFT JOIN LATERAL (
    SELECT array_agg(ph.id ORDER BY ph.id) AS ids, array_agg(ph.url ORDER BY ph.id) AS urls
    FROM answers_photos ph
    WHERE ph.answer_id = a.id
) ap ON true
WHERE q.id = $1
ORDER BY a.helpful DESC, a.id DESC
"""

# Every write also records the cache scopes it changes in cache_outbox, in the
# same statement (services/common/outbox.py), and returns the row's id for the
# writer to acknowledge once its own invalidation went through. Scopes as
# views.product_scope / question_scope name them: tests/common/test_outbox.py
# fails for any write whose outbox scopes miss what its reads cache.

# Resolves to the outbox id.
INSERT_QUESTION = """
WITH new_question AS (
    INSERT INTO questions (product_id, body, asker_name, asker_email)
    VALUES ($1, $2, $3, $4)
    RETURNING product_id
)
INSERT INTO cache_outbox (scopes) SELECT ARRAY['p:' || product_id] FROM new_question
RETURNING id
"""

# The answer and its photos in one statement (so one implicit transaction);
# no question, no insert, and no row tells the caller to 404. (product_id, outbox_id).
_INSERT_ANSWER = """
WITH parent AS (
    SELECT id, product_id FROM questions WHERE id = $1
){answer}, outbox AS (
    INSERT INTO cache_outbox (scopes)
    SELECT ARRAY['q:' || parent.id, 'p:' || parent.product_id] FROM parent, new_answer
    RETURNING id
)
SELECT parent.product_id, outbox.id FROM parent, outbox
"""
# With photos: the answer's id is drawn first, the photos go in, then the
# answer with their stored elements (011_answer_photo_elements.sql; from the
# photos' RETURNING element, so an element is defined in one place), which
# its photos' trigger then finds there and does not recompute.
INSERT_ANSWER = _INSERT_ANSWER.format(
    answer="""
, answer_id AS (
    SELECT nextval(pg_get_serial_sequence('answers', 'id'))::integer AS id FROM parent
), new_photos AS (
    INSERT INTO answers_photos (answer_id, url)
    SELECT answer_id.id, u.url
    FROM answer_id, unnest($5::text[]) WITH ORDINALITY AS u(url, n)
    ORDER BY u.n
    RETURNING id, element
), new_answer AS (
    INSERT INTO answers (id, question_id, body, answerer_name, answerer_email, photo_elements)
    SELECT answer_id.id, parent.id, $2, $3, $4,
           (SELECT string_agg(element, ',' ORDER BY id) FROM new_photos)
    FROM parent, answer_id
    RETURNING id
)"""
)
# Most answers come without photos: then the statement does not touch
# answers_photos at all, whose statement trigger would otherwise run for an
# empty insert (docs/decisions/0039), and draws no id ahead.
INSERT_ANSWER_NO_PHOTOS = _INSERT_ANSWER.format(
    answer="""
, new_answer AS (
    INSERT INTO answers (question_id, body, answerer_name, answerer_email)
    SELECT parent.id, $2, $3, $4 FROM parent
    RETURNING id
)"""
)

# (product_id, outbox_id), no row when no such question.
_QUESTION_UPDATE = """
WITH target AS (
    UPDATE questions SET {change} WHERE id = $1 RETURNING product_id
), outbox AS (
    INSERT INTO cache_outbox (scopes) SELECT ARRAY['p:' || product_id] FROM target RETURNING id
)
SELECT target.product_id, outbox.id FROM target, outbox
"""
QUESTION_HELPFUL = _QUESTION_UPDATE.format(change="helpful = helpful + 1")
# Idempotent: a second report finds the row and changes nothing visible.
QUESTION_REPORT = _QUESTION_UPDATE.format(change="reported = true")

# Answer updates return the question and its product: both caches show the
# answer. LEFT JOIN: an answer whose question is gone still answers 204.
# (question_id, product_id, outbox_id), no row when no such answer.
_ANSWER_UPDATE = """
WITH target AS (
    UPDATE answers SET {change} WHERE id = $1 RETURNING question_id
), owner AS (
    SELECT t.question_id, q.product_id
    FROM target t LEFT JOIN questions q ON q.id = t.question_id
), outbox AS (
    INSERT INTO cache_outbox (scopes)
    SELECT array_remove(ARRAY['q:' || question_id, 'p:' || product_id], NULL) FROM owner
    RETURNING id
)
SELECT owner.question_id, owner.product_id, outbox.id FROM owner, outbox
"""
ANSWER_HELPFUL = _ANSWER_UPDATE.format(change="helpful = helpful + 1")
ANSWER_REPORT = _ANSWER_UPDATE.format(change="reported = true")


# --- writes ----------------------------------------------------------------------
# Each write is one statement, so one transaction. These return the statement's
# awaitable itself (no coroutine of their own): the write path costs what it
# did when the views ran the SQL. Writes go through db.write_* (with read
# replicas, that records the commit's WAL position for the invalidation),
# reads through db.read_* (with read replicas, run where the cache says:
# services/common/replicas.py).


def add_question(db: Database, question: NewQuestion) -> Awaitable[int]:
    """Resolves to the write's outbox id."""
    return db.write_fetchval(
        INSERT_QUESTION, question.product_id, question.body, question.name, question.email
    )


def add_answer(
    db: Database, question_id: int, answer: NewAnswer
) -> Awaitable[asyncpg.Record | None]:
    """The answer and its photos; resolves to (the question's product_id,
    outbox id), None (nothing written) when no such question."""
    if not answer.photos:
        return db.write_fetchrow(
            INSERT_ANSWER_NO_PHOTOS, question_id, answer.body, answer.name, answer.email
        )
    return db.write_fetchrow(
        INSERT_ANSWER, question_id, answer.body, answer.name, answer.email, answer.photos
    )


def mark_question_helpful(db: Database, question_id: int) -> Awaitable[asyncpg.Record | None]:
    """Resolves to (the question's product_id, outbox id), None when no such question."""
    return db.write_fetchrow(QUESTION_HELPFUL, question_id)


def report_question(db: Database, question_id: int) -> Awaitable[asyncpg.Record | None]:
    """Resolves to (the question's product_id, outbox id), None when no such question."""
    return db.write_fetchrow(QUESTION_REPORT, question_id)


def mark_answer_helpful(db: Database, answer_id: int) -> Awaitable[asyncpg.Record | None]:
    """Resolves to (question_id, product_id; None when the question is gone,
    outbox id), None when no such answer."""
    return db.write_fetchrow(ANSWER_HELPFUL, answer_id)


def report_answer(db: Database, answer_id: int) -> Awaitable[asyncpg.Record | None]:
    """Like mark_answer_helpful."""
    return db.write_fetchrow(ANSWER_REPORT, answer_id)


# --- reads ------------------------------------------------------------------------


async def questions_page(db: Database, product_id: int, page: int, count: int) -> bytes:
    """The page's bytes, joined in SQL from the stored elements."""
    items = await db.read_fetchval(QUESTIONS_PAGE, product_id, count, (page - 1) * count)
    return b'{"product_id":"%d","results":[%b]}' % (product_id, items or b"")


async def questions_page_from_tables(db: Database, product_id: int, page: int, count: int) -> bytes:
    """The same page from the columns, folded here: the reference (the tests
    and services.qa.data.check_read_model compare the two byte for byte)."""
    rows = await db.read_fetch(QUESTIONS_PAGE_ROWS, product_id, count, (page - 1) * count)
    results: list[dict] = []
    question_id = None
    answers: dict[str, dict] = {}
    for r in rows:  # ordered by question, then answer: fold into the nested shape
        if r[0] != question_id:
            question_id = r[0]
            answers = {}
            results.append(
                {
                    "question_id": r[0],
                    "question_body": r[1],
                    "question_date": r[2],
                    "asker_name": r[3],
                    "question_helpfulness": r[4],
                    "reported": False,
                    "answers": answers,
                }
            )
        if r[5] is not None:  # NULL: the LEFT JOIN found no visible answer
            answers[str(r[5])] = {
                "id": r[5],
                "body": r[6],
                "date": r[7],
                "answerer_name": r[8],
                "helpfulness": r[9],
                "photos": r[10] or [],
            }
    return orjson.dumps({"product_id": str(product_id), "results": results})


async def answers_page(db: Database, question_id: int, page: int, count: int) -> bytes | None:
    """The page's bytes, or None when the question does not exist."""
    # A new question's answers scope was never invalidated: on a replica that
    # has not replayed it yet it would look missing, so "missing" is confirmed.
    rows = await db.read_fetch_found(ANSWERS_PAGE, question_id, count, (page - 1) * count)
    if not rows:
        return None
    return b'{"question":"%d","page":%d,"count":%d,"results":[%s]}' % (
        question_id,
        page - 1,
        count,
        rows[0][0],
    )


async def answers_page_from_tables(
    db: Database, question_id: int, page: int, count: int
) -> bytes | None:
    """The same body from the columns, folded here: the reference."""
    rows = await db.read_fetch_found(ANSWERS_PAGE_ROWS, question_id, count, (page - 1) * count)
    if not rows:
        return None
    results = [
        {
            "answer_id": r[0],
            "body": r[1],
            "date": r[2],
            "answerer_name": r[3],
            "helpfulness": r[4],
            "photos": [{"id": i, "url": u} for i, u in zip(r[5] or (), r[6] or (), strict=True)],
        }
        for r in rows
        if r[0] is not None
    ]
    return orjson.dumps(
        {"question": str(question_id), "page": page - 1, "count": count, "results": results}
    )
