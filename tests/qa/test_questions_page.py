"""The questions lists as served (queries.questions_page: the rows' stored
elements joined in SQL; migrations 008, 011 and 013) against the live query
and Python fold (queries.questions_page_from_tables): after randomized writes
through the API and awkward values written straight into the tables, every
touched product's pages must match byte for byte."""

from __future__ import annotations

import random

import asyncpg
import orjson

from services.common.db import Database
from services.common.resources import DB
from services.qa import queries
from tests.stored_photos import stored_photos_out_of_step

from .helpers import PHOTO, add_answer, add_question, answer_body, question_body

PAGES = [(1, 5), (2, 5), (1, 1), (3, 1), (2, 2), (1, 1000), (4, 3), (50, 5)]

# Each of these must come out of to_json exactly as orjson writes it.
AWKWARD = [
    'say "hi"',
    "back\\slash \\\\ and \\u0041 as text",
    "controls \b\f\n\r\t end",
    "".join(chr(c) for c in range(1, 32)),
    "del \x7f here",
    "line\u2028para\u2029sep",
    "astral 😀 𝄞 and é ü ß 中文",
    "slash / and </script>",
    "  spaced  ",
    "x" * 1000,
]


async def assert_pages_match(db: Database, product_id: int) -> None:
    for page, count in PAGES:
        served = await queries.questions_page(db, product_id, page, count)
        live = await queries.questions_page_from_tables(db, product_id, page, count)
        assert served == live, (product_id, page, count)
        orjson.loads(served)  # and it is JSON


async def api_writes(client, conn: asyncpg.Connection, rng: random.Random, products: list[int]):
    """One random write through the API; returns the product it touched or None."""
    [kind] = rng.choices(
        ["question", "answer", "q_helpful", "q_report", "a_helpful", "a_report"],
        weights=[4, 5, 3, 1, 3, 1],
    )
    if kind == "question":
        product = rng.choice(products)
        body = question_body(product, body=rng.choice(AWKWARD)[:1000], name=rng.choice(["n", "é"]))
        assert (await client.post("/qa/questions", json=body)).status == 201
        return product
    if kind == "answer":
        row = await conn.fetchrow("SELECT id, product_id FROM questions ORDER BY random() LIMIT 1")
        if row is None:
            return None
        photos = [PHOTO.format(rng.randrange(10**6)) for _ in range(rng.randrange(6))]
        body = answer_body(body=rng.choice(AWKWARD), photos=photos)
        resp = await client.post(f"/qa/questions/{row['id']}/answers", json=body)
        assert resp.status == 201
        return row["product_id"]
    if kind in ("q_helpful", "q_report"):
        row = await conn.fetchrow("SELECT id, product_id FROM questions ORDER BY random() LIMIT 1")
        if row is None:
            return None
        action = "helpful" if kind == "q_helpful" else "report"
        assert (await client.put(f"/qa/questions/{row['id']}/{action}")).status == 204
        return row["product_id"]
    row = await conn.fetchrow(
        "SELECT a.id, q.product_id FROM answers a JOIN questions q ON q.id = a.question_id"
        " ORDER BY random() LIMIT 1"
    )
    if row is None:
        return None
    action = "helpful" if kind == "a_helpful" else "report"
    assert (await client.put(f"/qa/answers/{row['id']}/{action}")).status == 204
    return row["product_id"]


async def table_writes(db: Database, rng: random.Random, products: list[int]) -> set[int]:
    """Awkward values straight into the tables, as the app role (through the
    tests' PgBouncer with RUNWAY_TEST_POOLER=1): its rights run the photos'
    trigger."""
    product = rng.choice(products)
    helpful = rng.randrange(4)  # ties on helpful: the id decides
    question = await db.write_fetchval(
        "INSERT INTO questions (product_id, body, date_written, asker_name, asker_email, helpful)"
        " VALUES ($1, $2, to_timestamp($3 / 1000.0), $4, 'a@x.io', $5) RETURNING id",
        product,
        rng.choice(AWKWARD),
        rng.randrange(10**12, 2 * 10**12),
        rng.choice(AWKWARD)[:60],
        helpful,
    )
    for _ in range(rng.randrange(4)):
        answer = await db.write_fetchval(
            "INSERT INTO answers (question_id, body, answerer_name, answerer_email, helpful,"
            " reported) VALUES ($1, $2, $3, 'b@x.io', $4, $5) RETURNING id",
            question,
            rng.choice(AWKWARD),
            rng.choice(AWKWARD)[:60],
            rng.randrange(3),
            rng.random() < 0.2,
        )
        # A bare NULL url (left out of the list) and urls needing escapes.
        urls = rng.sample([None, 'https://x.io/"q".jpg', "https://x.io/a\\b.jpg", PHOTO], 2)
        for url in urls:
            await db.write_fetchval(
                "INSERT INTO answers_photos (answer_id, url) VALUES ($1, $2) RETURNING id",
                answer,
                url,
            )
    touched = {product}
    if rng.random() < 0.3:  # a question moved to another product: both lists change
        other = rng.choice(products)
        await db.write_fetchval(
            "UPDATE questions SET product_id = $2 WHERE id = $1 RETURNING id", question, other
        )
        touched.add(other)
    if rng.random() < 0.2:  # a photo's url changed or removed
        photo = await db.write_fetchval(
            "SELECT p.id FROM answers_photos p JOIN answers a ON a.id = p.answer_id"
            " WHERE a.question_id = $1 LIMIT 1",
            question,
        )
        if photo is not None:
            await db.write_fetchval(
                "UPDATE answers_photos SET url = $2 WHERE id = $1 RETURNING id", photo, "\u2028"
            )
            await db.write_fetchval("DELETE FROM answers_photos WHERE id = $1 RETURNING id", photo)
    return touched


async def test_randomized_writes_match_the_live_query(qa_client, qa_conn):
    rng = random.Random(21)
    db = qa_client.app[DB]
    products = [1, 2, 3, 7, 2**31 - 1]
    touched: set[int] = set()
    for round_ in range(120):
        if round_ % 3 == 0:
            touched |= await table_writes(db, rng, products)
        else:
            product = await api_writes(qa_client, qa_conn, rng, products)
            if product is not None:
                touched.add(product)
        if round_ % 20 == 19:
            for product in sorted(touched):
                await assert_pages_match(db, product)
    assert touched == set(products)
    for product in sorted(touched):
        await assert_pages_match(db, product)
    # The view serves these bytes (a key no earlier read cached).
    resp = await qa_client.get(f"/qa/questions?product_id={products[0]}&page=1&count=7")
    assert resp.status == 200
    assert await resp.read() == await queries.questions_page_from_tables(db, products[0], 1, 7)
    # Something was exercised: visible and reported questions, answers and photos.
    stats = await qa_conn.fetchrow(
        "SELECT count(*) FILTER (WHERE reported) r, count(*) FILTER (WHERE NOT reported) v,"
        " (SELECT count(*) FROM answers) a, (SELECT count(*) FROM answers_photos) p"
        " FROM questions"
    )
    assert stats["r"] >= 3 and stats["v"] >= 30 and stats["a"] >= 30 and stats["p"] >= 30


async def test_answer_with_photos_in_one_statement_is_on_the_page(qa_client, qa_conn):
    question = await add_question(qa_conn, 9)
    photos = [PHOTO.format(1), PHOTO.format(2)]
    resp = await qa_client.post(
        f"/qa/questions/{question}/answers", json=answer_body(photos=photos)
    )
    assert resp.status == 201
    served = orjson.loads(await queries.questions_page(qa_client.app[DB], 9, 1, 5))
    [answer] = served["results"][0]["answers"].values()
    assert answer["photos"] == photos


async def test_no_questions_or_all_reported_is_empty(qa_client, qa_conn):
    db = qa_client.app[DB]
    assert await queries.questions_page(db, 4, 1, 5) == b'{"product_id":"4","results":[]}'
    question = await add_question(qa_conn, 4)
    assert await queries.questions_page(db, 4, 1, 5) != b'{"product_id":"4","results":[]}'
    assert (await qa_client.put(f"/qa/questions/{question}/report")).status == 204
    assert await queries.questions_page(db, 4, 1, 5) == b'{"product_id":"4","results":[]}'
    # Pages far past the end, up to the largest page and count the routes accept.
    await add_question(qa_conn, 4)
    for page, count in ((2, 5), (2**31 - 1, 1000), (2**31 - 1, 1)):
        assert await queries.questions_page(db, 4, page, count) == (
            await queries.questions_page_from_tables(db, 4, page, count)
        )


async def test_answer_writes_write_no_question_row(qa_client, qa_conn, connect, qa_db):
    """What 013 is for (decision 0055): an answer's POST, vote and report
    write their own rows (and the outbox's), never their question's."""
    question = await add_question(qa_conn, 6)
    answer = await add_answer(qa_conn, question)
    photos = [PHOTO.format(1)]
    writes = [
        (queries.INSERT_ANSWER, (question, "b", "n", "n@x.io", photos)),
        (queries.INSERT_ANSWER_NO_PHOTOS, (question, "b", "n", "n@x.io")),
        (queries.ANSWER_HELPFUL, (answer,)),
        (queries.ANSWER_REPORT, (answer,)),
    ]
    written = (
        "SELECT pg_stat_get_xact_tuples_inserted(c) + pg_stat_get_xact_tuples_updated(c)"
        " + pg_stat_get_xact_tuples_deleted(c) FROM (SELECT 'questions'::regclass::oid c) x"
    )
    for sql, args in writes:
        # A fresh session: the xact counters also hold its earlier, unflushed writes.
        fresh = await connect(qa_db)
        async with fresh.transaction():
            assert await fresh.fetchrow(sql, *args) is not None
            assert await fresh.fetchval(written) == 0, sql
    # ...while the page shows them all.
    await assert_pages_match(qa_client.app[DB], 6)
    served = orjson.loads(await queries.questions_page(qa_client.app[DB], 6, 1, 5))
    assert len(served["results"][0]["answers"]) == 2  # the reported one is gone
    # A question's own vote does write its row.
    fresh = await connect(qa_db)
    async with fresh.transaction():
        await fresh.fetchrow(queries.QUESTION_HELPFUL, question)
        assert await fresh.fetchval(written) == 1


async def test_loader_loads_every_page_and_leaves_the_trigger_on(
    tmp_path, qa_client, qa_conn, qa_db, redis_server
):
    from services.qa.data import generator

    from .test_etl import QUIRKY_ANSWERS, QUIRKY_PHOTOS, QUIRKY_QUESTIONS, run_load, write_export

    db = qa_client.app[DB]
    # A question of the previous data must not survive the load.
    await add_question(qa_conn, 10**6)
    generator.generate(tmp_path / "data", scale=0.0005, seed=5)
    report = await run_load(qa_db, tmp_path / "data", tmp_path / "report", redis_server.url)
    assert report["status"] == "ok"
    assert await qa_conn.fetchval("SELECT count(photo_elements) FROM answers") > 10
    assert await stored_photos_out_of_step(qa_conn, "answers") == []
    products = [
        r[0] for r in await qa_conn.fetch("SELECT DISTINCT product_id FROM questions ORDER BY 1")
    ]
    assert len(products) > 100
    for product in products:
        for page, count in ((1, 1000), (1, 5), (2, 3)):
            assert await queries.questions_page(db, product, page, count) == (
                await queries.questions_page_from_tables(db, product, page, count)
            ), (product, page, count)
    assert await queries.questions_page(db, 10**6, 1, 5) == b'{"product_id":"1000000","results":[]}'

    # The photos' trigger is on again: a photo written on its own after the
    # load, to an answer that had none, is listed.
    answer, product_id = await qa_conn.fetchrow(
        "SELECT a.id, q.product_id FROM answers a JOIN questions q ON q.id = a.question_id"
        " WHERE NOT q.reported AND NOT a.reported AND a.photo_elements IS NULL"
        " ORDER BY a.id LIMIT 1"
    )
    await qa_conn.execute(
        "INSERT INTO answers_photos (answer_id, url) VALUES ($1, $2)", answer, PHOTO.format(9)
    )
    await assert_pages_match(db, product_id)
    assert b'"https://img.example/9.jpg"' in await queries.questions_page(db, product_id, 1, 1000)

    # The export's quirks (quotes, newlines, a NULL and a "null" url, reported rows).
    data = write_export(tmp_path / "quirky", QUIRKY_QUESTIONS, QUIRKY_ANSWERS, QUIRKY_PHOTOS)
    await run_load(qa_db, data, tmp_path / "report2", redis_server.url, parse_in_child=False)
    visible = "SELECT DISTINCT product_id FROM questions WHERE NOT reported ORDER BY 1"
    assert [r[0] for r in await qa_conn.fetch(visible)] == [5, 7]
    for product in (5, 6, 7, product_id):
        await assert_pages_match(db, product)


async def test_check_tool_finds_photos_stored_behind_the_trigger(qa_client, qa_conn, qa_db, capsys):
    from services.qa.data import check_read_model

    for product in (1, 2, 3):
        question = await add_question(qa_conn, product, body=f"q{product}")
        await add_answer(qa_conn, question, photos=[PHOTO.format(product)])
    assert await check_read_model.check(qa_db, 0, seed=1) == []
    # A photo written behind the trigger, to an answer without any: its
    # stored photos stay NULL, and the list would not look for its url.
    question = await add_question(qa_conn, 2, body="q2 again")
    answer = await add_answer(qa_conn, question)
    await qa_conn.execute("ALTER TABLE answers_photos DISABLE TRIGGER USER")
    try:
        await qa_conn.execute(
            "INSERT INTO answers_photos (answer_id, url) VALUES ($1, $2)", answer, PHOTO.format(9)
        )
    finally:
        await qa_conn.execute("ALTER TABLE answers_photos ENABLE TRIGGER USER")
    assert await check_read_model.check(qa_db, 0, seed=1) == [2]
    assert "3 products: 1 differ" in capsys.readouterr().out
    # The documented repair.
    await qa_conn.execute("SELECT qa_fill_answer_photo_elements()")
    assert await check_read_model.check(qa_db, 0, seed=1) == []


async def test_photos_of_every_kind_of_write_are_listed(qa_client, qa_conn):
    """The list looks for an answer's photo urls only where its stored photos
    (migrations/011) say it has some: photos written with their answer, by a
    later statement, and inside a function must all be listed."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 11)
    photos = [PHOTO.format(1), PHOTO.format(2)]
    await qa_conn.fetchrow(queries.INSERT_ANSWER, question, "b", "n", "n@x.io", photos)
    insert_answer = (
        "INSERT INTO answers (question_id, body, answerer_name, answerer_email)"
        " VALUES ($1, 'later', 'n', 'n@x.io') RETURNING id"
    )
    async with qa_conn.transaction():
        answer = await qa_conn.fetchval(insert_answer, question)
        await qa_conn.execute(
            "INSERT INTO answers_photos (answer_id, url) VALUES ($1, $2)", answer, PHOTO.format(3)
        )
    # Both statements in one round trip, inside one function call.
    await qa_conn.execute(
        "DO $$ DECLARE a integer; BEGIN"
        f" INSERT INTO answers (question_id, body, answerer_name, answerer_email)"
        f" VALUES ({question}, 'in a DO block', 'n', 'n@x.io') RETURNING id INTO a;"
        " INSERT INTO answers_photos (answer_id, url) VALUES (a, 'https://img.example/4.jpg');"
        " END $$"
    )
    await assert_pages_match(db, 11)
    served = await queries.questions_page(db, 11, 1, 5)
    for n in (1, 2, 3, 4):
        assert PHOTO.format(n).encode() in served
