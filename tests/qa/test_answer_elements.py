"""The stored answer elements (migrations/008_answer_elements.sql) and
photos (011_answer_photo_elements.sql): after a randomized series of
writes, through the API and straight into the tables, every answers page
built from them equals, byte for byte, the page folded from the columns
(queries.answers_page_from_tables); the loader fills them for every row it
loads; photos written at once, moved or truncated stay right."""

from __future__ import annotations

import random

import orjson

from services.common.resources import DB
from services.qa import queries
from tests.stored_photos import photos_written_at_once, recompute_calls

from .helpers import PHOTO, add_answer, add_question, answer_body
from .test_questions_page import api_writes, table_writes

PAGES = [(1, 5), (2, 5), (1, 1), (3, 1), (2, 2), (1, 1000), (4, 3), (50, 5)]


async def assert_answer_pages_match(db, questions: list[int]) -> int:
    checked = 0
    for question in questions:
        for page, count in PAGES:
            served = await queries.answers_page(db, question, page, count)
            folded = await queries.answers_page_from_tables(db, question, page, count)
            assert served == folded, (question, page, count)
            if served is not None:
                orjson.loads(served)  # and it is JSON
            checked += 1
    return checked


async def test_stored_elements_match_the_columns_after_random_writes(qa_client, qa_conn):
    rng = random.Random(22)
    db = qa_client.app[DB]
    products = [1, 2, 3, 7, 2**31 - 1]
    for round_ in range(120):
        if round_ % 3 == 0:
            await table_writes(db, rng, products)
        else:
            await api_writes(qa_client, qa_conn, rng, products)
    # Ties in helpful (the id decides) and a body changed in place.
    await qa_conn.execute("UPDATE answers SET helpful = id % 3 WHERE id % 2 = 0")
    await qa_conn.execute(
        "UPDATE answers SET body = 'changed \"here\"\n' WHERE id = (SELECT max(id) FROM answers)"
    )
    questions = [r[0] for r in await qa_conn.fetch("SELECT id FROM questions ORDER BY id")]
    missing = max(questions) + 1
    assert await assert_answer_pages_match(db, [*questions, missing]) == (
        (len(questions) + 1) * len(PAGES)
    )
    assert await queries.answers_page(db, missing, 1, 5) is None
    # Something was exercised: reported and visible answers, photos with and without a url.
    stats = await qa_conn.fetchrow(
        "SELECT count(*) FILTER (WHERE reported) r, count(*) FILTER (WHERE NOT reported) v,"
        " (SELECT count(*) FROM answers_photos WHERE url IS NULL) n,"
        " (SELECT count(*) FROM answers_photos WHERE url IS NOT NULL) u FROM answers"
    )
    assert stats["r"] >= 3 and stats["v"] >= 30 and stats["n"] >= 1 and stats["u"] >= 30
    # The view serves the stored elements' bytes (a key no earlier read cached).
    busiest = await qa_conn.fetchval(
        "SELECT question_id FROM answers WHERE NOT reported"
        " GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    )
    resp = await qa_client.get(f"/qa/questions/{busiest}/answers?page=1&count=7")
    assert resp.status == 200
    assert await resp.read() == await queries.answers_page_from_tables(db, busiest, 1, 7)


async def test_a_vote_changes_the_page_without_rewriting_the_element(qa_client, qa_conn):
    """The vote count is read from its column: the stored head (which ends at
    `"helpfulness":`) is the same bytes before and after a vote, and the page
    shows the new count in the new order."""
    question = await add_question(qa_conn, 4)
    ids = []
    for i in range(3):
        resp = await qa_client.post(
            f"/qa/questions/{question}/answers",
            json=answer_body(body=f"a{i}", photos=[PHOTO.format(i)] if i == 0 else []),
        )
        assert resp.status == 201
        ids.append(await qa_conn.fetchval("SELECT max(id) FROM answers"))
    first = ids[0]
    head = await qa_conn.fetchval("SELECT element_head FROM answers WHERE id = $1", first)
    assert head.endswith('"helpfulness":')
    for _ in range(2):
        assert (await qa_client.put(f"/qa/answers/{first}/helpful")).status == 204
    assert await qa_conn.fetchval("SELECT element_head FROM answers WHERE id = $1", first) == head
    db = qa_client.app[DB]
    page = await queries.answers_page(db, question, 1, 1)
    assert page.startswith(b'{"question":"%d","page":0,"count":1,"results":[' % question)
    assert head.encode() + b'2,"photos":[{"id":' in page
    assert await assert_answer_pages_match(db, [question]) == len(PAGES)


async def test_the_loader_fills_every_element(tmp_path, qa_client, qa_conn, qa_db, redis_server):
    from services.qa.data import generator

    from .test_etl import QUIRKY_ANSWERS, QUIRKY_PHOTOS, QUIRKY_QUESTIONS, run_load, write_export

    db = qa_client.app[DB]
    generator.generate(tmp_path / "data", scale=0.0005, seed=6)
    report = await run_load(qa_db, tmp_path / "data", tmp_path / "report", redis_server.url)
    assert report["status"] == "ok"
    assert await qa_conn.fetchval("SELECT count(*) FROM answers") > 100
    assert await qa_conn.fetchval("SELECT count(*) FROM answers WHERE element_head IS NULL") == 0
    assert await qa_conn.fetchval("SELECT count(*) FROM answers_photos") > 10
    assert await qa_conn.fetchval("SELECT count(*) FROM answers_photos WHERE element IS NULL") == 0
    questions = [r[0] for r in await qa_conn.fetch("SELECT id FROM questions ORDER BY id")]
    await assert_answer_pages_match(db, random.Random(6).sample(questions, 80))

    # The export's quirks (quotes, newlines, a NULL and a "null" url, reported rows).
    data = write_export(tmp_path / "quirky", QUIRKY_QUESTIONS, QUIRKY_ANSWERS, QUIRKY_PHOTOS)
    await run_load(qa_db, data, tmp_path / "report2", redis_server.url, parse_in_child=False)
    questions = [r[0] for r in await qa_conn.fetch("SELECT id FROM questions ORDER BY id")]
    assert await assert_answer_pages_match(db, questions) == len(questions) * len(PAGES)


# ------------------------------------ each answer's photos, stored in its row (011)


async def test_photos_written_at_once_to_one_answer_are_all_kept(qa_client, connect, qa_db):
    """Two transactions add a photo to the same answer at once: the second's
    trigger waits for the first's row lock and then reads both photos, so the
    answer's stored photos (011_answer_photo_elements.sql) hold both, in id
    order."""
    db = qa_client.app[DB]
    question = await db.write_fetchval(
        "INSERT INTO questions (product_id, body, asker_name, asker_email)"
        " VALUES (8, 'q', 'n', 'e@x.io') RETURNING id"
    )
    resp = await qa_client.post(f"/qa/questions/{question}/answers", json=answer_body())
    assert resp.status == 201
    answer = await db.read_fetchval("SELECT max(id) FROM answers")
    stored = await photos_written_at_once(connect, qa_db, "answers", answer)
    assert stored.count('"url":') == 2, stored
    assert stored.index('"url":"a"') < stored.index('"url":"b"')
    assert await assert_answer_pages_match(db, [question]) == len(PAGES)


async def test_a_posted_answer_writes_its_photos_once(qa_client, qa_conn):
    """The POST's statement stores the photos with the answer, so the trigger
    recomputes nothing; a photo added by hand is recomputed; the pages equal
    the tables'."""
    question = await add_question(qa_conn, 9)
    urls = [PHOTO.format(1), 'https://x/"b".jpg', None]
    refresh = "qa_refresh_answer_photo_elements"
    insert_answer = (queries.INSERT_ANSWER, question, "b", "n", "e@x.io", urls)
    assert await recompute_calls(qa_conn, refresh, *insert_answer) == 0
    answer = await qa_conn.fetchval("SELECT max(id) FROM answers")
    stored = await qa_conn.fetchval("SELECT photo_elements FROM answers WHERE id = $1", answer)
    assert stored.count('"url":') == 3
    insert = "INSERT INTO answers_photos (answer_id, url) VALUES ($1, 'https://x/c.jpg')"
    assert await recompute_calls(qa_conn, refresh, insert, answer) == 1
    assert await assert_answer_pages_match(qa_client.app[DB], [question]) == len(PAGES)


async def test_a_photo_moved_or_truncated_leaves_both_answers_right(qa_client, qa_conn):
    question = await add_question(qa_conn, 10)
    first = await add_answer(qa_conn, question, photos=[PHOTO.format(1), PHOTO.format(2)])
    second = await add_answer(qa_conn, question, body="Second.", photos=[PHOTO.format(3)])
    db = qa_client.app[DB]
    await qa_conn.execute(
        "UPDATE answers_photos SET answer_id = $2 WHERE id = (SELECT min(id) FROM answers_photos"
        " WHERE answer_id = $1)",
        first,
        second,
    )
    rows = "SELECT id, photo_elements FROM answers WHERE id = ANY($1)"
    stored = dict(await qa_conn.fetch(rows, [first, second]))
    assert stored[first].count('"url":') == 1 and stored[second].count('"url":') == 2
    assert await assert_answer_pages_match(db, [question]) == len(PAGES)
    await qa_conn.execute("TRUNCATE answers_photos")
    assert b'"url"' not in await queries.answers_page(db, question, 1, 5)
    assert await assert_answer_pages_match(db, [question]) == len(PAGES)
