"""The questions lists' read model (question_documents, kept by triggers in each
write's transaction; migrations/004_read_model.sql) against the live query
and Python fold it replaced (queries.questions_page_from_tables): after
randomized writes through the API and awkward values written straight into
the tables, every touched product's pages must match byte for byte."""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg
import orjson

from services.common.db import Database
from services.common.resources import DB
from services.qa import queries

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
    tests' PgBouncer with RUNWAY_TEST_POOLER=1): its rights run the triggers."""
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
    # The view serves the read model's bytes (a key no earlier read cached).
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


async def test_answer_with_photos_in_one_statement_is_in_the_document(qa_client, qa_conn):
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
    assert await qa_conn.fetchval("SELECT count(*) FROM question_documents") == 1
    assert (await qa_client.put(f"/qa/questions/{question}/report")).status == 204
    assert await qa_conn.fetchval("SELECT count(*) FROM question_documents") == 0  # row dropped
    assert await queries.questions_page(db, 4, 1, 5) == b'{"product_id":"4","results":[]}'
    # Pages far past the end, up to the largest page and count the routes accept.
    await add_question(qa_conn, 4)
    for page, count in ((2, 5), (2**31 - 1, 1000), (2**31 - 1, 1)):
        assert await queries.questions_page(db, 4, page, count) == (
            await queries.questions_page_from_tables(db, 4, page, count)
        )


async def wait_until_blocked(conn: asyncpg.Connection, pid: int) -> None:
    """Until backend `pid` waits for a lock (polled, with a deadline)."""
    deadline = time.monotonic() + 10
    while not await conn.fetchval(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
    ):
        assert time.monotonic() < deadline, "the second write never waited for the first"
        await asyncio.sleep(0.01)


async def test_concurrent_writes_to_one_question_lose_nothing(qa_client, qa_conn, connect, qa_db):
    """Two transactions change two answers of one question at once: the
    second's trigger must wait for the first's commit and build from it."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 8)
    first, second = await add_answer(qa_conn, question), await add_answer(qa_conn, question)
    other = await connect(qa_db)
    async with qa_conn.transaction():
        await qa_conn.execute("UPDATE answers SET helpful = 5 WHERE id = $1", first)
        late = asyncio.create_task(
            other.execute("UPDATE answers SET helpful = 3 WHERE id = $1", second)
        )
        await wait_until_blocked(qa_conn, other.get_server_pid())
    await late
    await assert_pages_match(db, 8)
    served = orjson.loads(await queries.questions_page(db, 8, 1, 5))
    embedded = served["results"][0]["answers"].values()
    assert [a["helpfulness"] for a in embedded] == [5, 3]


async def has_element(conn: asyncpg.Connection, question: int) -> bool:
    sql = "SELECT EXISTS (SELECT 1 FROM question_documents WHERE question_id = $1)"
    return await conn.fetchval(sql, question)


async def element_of(conn: asyncpg.Connection, question: int) -> dict:
    sql = "SELECT element FROM question_documents WHERE question_id = $1"
    return orjson.loads(await conn.fetchval(sql, question))


async def test_a_helpful_vote_patches_the_number_and_rebuilds_nothing(qa_client, qa_conn):
    """PUT /qa/questions/:id/helpful patches the element's number in place
    (005_helpful_patch.sql): an answer changed behind the triggers' back
    stays as it was in the element (a rebuild would pick it up), while the
    number, across digit-count changes, and the list's order follow the votes."""
    db = qa_client.app[DB]
    voted = await add_question(qa_conn, 14, helpful=9, body='a "quoted" ,"question_helpfulness":9,')
    other = await add_question(qa_conn, 14, helpful=10)
    answer = await add_answer(qa_conn, voted, body="before")
    await qa_conn.execute("SET session_replication_role = replica")  # no triggers
    await qa_conn.execute("UPDATE answers SET body = 'behind' WHERE id = $1", answer)
    await qa_conn.execute("RESET session_replication_role")
    assert (await qa_client.put(f"/qa/questions/{voted}/helpful")).status == 204
    element = await element_of(qa_conn, voted)
    assert element["question_helpfulness"] == 10
    assert element["question_body"] == 'a "quoted" ,"question_helpfulness":9,'
    assert element["answers"][str(answer)]["body"] == "before"  # patched, not rebuilt
    assert (await qa_client.put(f"/qa/questions/{voted}/helpful")).status == 204
    assert (await element_of(qa_conn, voted))["question_helpfulness"] == 11
    served = orjson.loads(await queries.questions_page(db, 14, 1, 5))
    assert [q["question_id"] for q in served["results"]] == [voted, other]
    # Once rebuilt (the answer written through the triggers), all matches the tables.
    await qa_conn.execute("UPDATE answers SET body = 'after' WHERE id = $1", answer)
    await assert_pages_match(db, 14)


async def test_a_helpful_vote_on_a_row_out_of_step_rebuilds_it(qa_client, qa_conn):
    """The patch applies only to a row holding what the vote changed from; a
    row out of step with the tables is rebuilt instead (the vote's fallback)."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 15, helpful=99)
    await add_answer(qa_conn, question)
    await qa_conn.execute("SET session_replication_role = replica")
    await qa_conn.execute(
        "UPDATE question_documents SET helpful = 7 WHERE question_id = $1", question
    )
    await qa_conn.execute("RESET session_replication_role")
    assert (await qa_client.put(f"/qa/questions/{question}/helpful")).status == 204
    assert (await element_of(qa_conn, question))["question_helpfulness"] == 100
    await assert_pages_match(db, 15)


async def test_concurrent_votes_and_answers_on_one_question_lose_nothing(qa_client, qa_conn):
    """Votes (patched) and answers (rebuilt) on one question at once, over
    the service's pool: every vote and every answer is in the element."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 16, helpful=8)
    votes = [qa_client.put(f"/qa/questions/{question}/helpful") for _ in range(12)]
    answers = [
        qa_client.post(f"/qa/questions/{question}/answers", json=answer_body(body=f"a{i}"))
        for i in range(6)
    ]
    for resp in await asyncio.gather(*votes, *answers):
        assert resp.status in (201, 204)
    element = await element_of(qa_conn, question)
    assert element["question_helpfulness"] == 20
    assert len(element["answers"]) == 6
    await assert_pages_match(db, 16)


async def test_unchanged_update_and_unrelated_writes_keep_the_row(qa_client, qa_conn):
    """A second report changes nothing visible: the row is not rewritten."""
    question = await add_question(qa_conn, 6)
    answer = await add_answer(qa_conn, question, reported=True)
    before = await qa_conn.fetchval(
        "SELECT xmin::text FROM question_documents WHERE question_id = $1", question
    )
    assert (await qa_client.put(f"/qa/answers/{answer}/report")).status == 204
    after = await qa_conn.fetchval(
        "SELECT xmin::text FROM question_documents WHERE question_id = $1", question
    )
    assert before == after
    assert (await qa_client.put(f"/qa/questions/{question}/helpful")).status == 204
    assert (
        await qa_conn.fetchval(
            "SELECT xmin::text FROM question_documents WHERE question_id = $1", question
        )
        != after
    )


async def test_loader_builds_every_document_and_leaves_the_triggers_on(
    tmp_path, qa_client, qa_conn, qa_db, redis_server
):
    from services.qa.data import generator

    from .test_etl import QUIRKY_ANSWERS, QUIRKY_PHOTOS, QUIRKY_QUESTIONS, run_load, write_export

    db = qa_client.app[DB]
    # A document of the previous data must not survive the load.
    await add_question(qa_conn, 10**6)
    generator.generate(tmp_path / "data", scale=0.0005, seed=5)
    report = await run_load(qa_db, tmp_path / "data", tmp_path / "report", redis_server.url)
    assert report["status"] == "ok" and "question_documents" in report["steps"]
    products = [
        r[0] for r in await qa_conn.fetch("SELECT DISTINCT product_id FROM questions ORDER BY 1")
    ]
    assert len(products) > 100
    assert await qa_conn.fetchval(
        "SELECT count(*) FROM question_documents"
    ) == await qa_conn.fetchval("SELECT count(*) FROM questions WHERE NOT reported")
    for product in products:
        for page, count in ((1, 1000), (1, 5), (2, 3)):
            assert await queries.questions_page(db, product, page, count) == (
                await queries.questions_page_from_tables(db, product, page, count)
            ), (product, page, count)
    assert await queries.questions_page(db, 10**6, 1, 5) == b'{"product_id":"1000000","results":[]}'

    # The triggers are on again: a write after the load reaches the document.
    busiest = products[0]
    question = await qa_conn.fetchval(
        "SELECT id FROM questions WHERE product_id = $1 AND NOT reported LIMIT 1", busiest
    )
    resp = await qa_client.post(
        f"/qa/questions/{question}/answers", json=answer_body(photos=[PHOTO.format(9)])
    )
    assert resp.status == 201
    await assert_pages_match(db, busiest)
    assert b'"https://img.example/9.jpg"' in await queries.questions_page(db, busiest, 1, 1000)

    # The export's quirks (quotes, newlines, a NULL and a "null" url, reported rows).
    data = write_export(tmp_path / "quirky", QUIRKY_QUESTIONS, QUIRKY_ANSWERS, QUIRKY_PHOTOS)
    await run_load(qa_db, data, tmp_path / "report2", redis_server.url, parse_in_child=False)
    assert sorted(
        r[0] for r in await qa_conn.fetch("SELECT DISTINCT product_id FROM question_documents")
    ) == [
        5,
        7,
    ]
    for product in (5, 6, 7, busiest):
        await assert_pages_match(db, product)


async def test_check_tool_finds_a_stale_document(qa_client, qa_conn, qa_db, capsys):
    from services.qa.data import check_read_model

    for product in (1, 2, 3):
        question = await add_question(qa_conn, product, body=f"q{product}")
        await add_answer(qa_conn, question, photos=[PHOTO.format(product)])
    assert await check_read_model.check(qa_db, 0, seed=1) == []
    # A write that bypassed the triggers: the check names the product.
    await qa_conn.execute("ALTER TABLE answers DISABLE TRIGGER USER")
    try:
        await qa_conn.execute("UPDATE answers SET body = 'changed' WHERE id = 2")
    finally:
        await qa_conn.execute("ALTER TABLE answers ENABLE TRIGGER USER")
    assert await check_read_model.check(qa_db, 0, seed=1) == [2]
    assert "3 products: 1 differ" in capsys.readouterr().out
    # The documented repair.
    await qa_conn.execute(
        "SELECT qa_refresh_question_documents(ARRAY(SELECT id FROM questions"
        " WHERE product_id = ANY(ARRAY[2])))"
    )
    assert await check_read_model.check(qa_db, 0, seed=1) == []


async def test_answer_and_photos_rebuild_once_per_statement_not_less(
    qa_client, qa_conn, connect, qa_db
):
    """INSERT_ANSWER's answers trigger rebuilds the product after the answer
    and its photos; its photos trigger then skips it. Photos written by a
    later statement of the same transaction still rebuild it."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 11)
    written = (
        "SELECT pg_stat_get_xact_tuples_inserted(c) + pg_stat_get_xact_tuples_updated(c)"
        " FROM (SELECT 'question_documents'::regclass::oid c) x"
    )
    # A fresh session: the xact counters also hold its earlier, unflushed writes.
    fresh = await connect(qa_db)
    async with fresh.transaction():
        photos = [PHOTO.format(1), PHOTO.format(2)]
        await fresh.fetchrow(queries.INSERT_ANSWER, question, "b", "n", "n@x.io", photos)
        assert await fresh.fetchval(written) == 1
    await assert_pages_match(db, 11)

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


async def test_a_new_question_is_built_from_its_row_alone(qa_client, qa_conn):
    """A new question's element is built without the rebuild (006): no other
    transaction can have answered it yet. An answer that already names its id
    (written outside the service) sends it through the rebuild, answer included."""
    db = qa_client.app[DB]
    insert = (
        "INSERT INTO questions (id, product_id, body, asker_name, asker_email)"
        " VALUES ($1, 17, 'new', 'n', 'n@x.io')"
    )
    fresh_id = await qa_conn.fetchval("SELECT coalesce(max(id), 0) + 1000 FROM questions")
    assert await rebuilds_and_patches(qa_conn, insert, fresh_id) == {}
    orphan_id = fresh_id + 1
    answer = await add_answer(qa_conn, orphan_id, body="waiting for its question")
    calls = await rebuilds_and_patches(qa_conn, insert, orphan_id)
    assert calls == {"qa_refresh_question_documents": 1}
    assert list((await element_of(qa_conn, orphan_id))["answers"]) == [str(answer)]
    await assert_pages_match(db, 17)


async def test_an_answer_vote_patches_the_number_unless_the_order_changes(qa_client, qa_conn):
    """PUT /qa/answers/:id/helpful patches the answer's number in place (006)
    while the answers keep their order: an answer changed behind the
    triggers' back stays as it was (a rebuild would pick it up). A vote that
    moves the answer past another one rebuilds, and the order follows."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 18)
    tricky = 'says ,"helpfulness":3, and "7":{"id":7,'
    voted = await add_answer(qa_conn, question, helpful=9, body=tricky, name=tricky)
    ahead = await add_answer(qa_conn, question, helpful=12)
    behind = await add_answer(qa_conn, question, helpful=9)  # same helpful, larger id: first
    await qa_conn.execute("SET session_replication_role = replica")  # no triggers
    await qa_conn.execute("UPDATE answers SET body = 'changed' WHERE id = $1", ahead)
    await qa_conn.execute("RESET session_replication_role")
    vote = f"/qa/answers/{voted}/helpful"
    # 9 -> 10: `behind` (9, larger id) was before it and is after it now: a rebuild.
    assert (await qa_client.put(vote)).status == 204
    element = await element_of(qa_conn, question)
    assert list(element["answers"]) == [str(ahead), str(voted), str(behind)]
    assert element["answers"][str(ahead)]["body"] == "changed"  # rebuilt
    await qa_conn.execute("SET session_replication_role = replica")
    await qa_conn.execute("UPDATE answers SET body = 'behind the back' WHERE id = $1", ahead)
    await qa_conn.execute("RESET session_replication_role")
    # 10 -> 11 and 11 -> 12 (12 ties with `ahead`, whose larger id keeps it first): patched.
    update = "UPDATE answers SET helpful = helpful + 1 WHERE id = $1"
    for expected in (11, 12):
        calls = await rebuilds_and_patches(qa_conn, update, voted)
        assert calls == {"qa_patch_answer_helpful": 1}
        element = await element_of(qa_conn, question)
        assert element["answers"][str(voted)]["helpfulness"] == expected
        assert element["answers"][str(voted)]["body"] == tricky
        assert element["answers"][str(voted)]["answerer_name"] == tricky
        assert element["answers"][str(ahead)]["body"] == "changed"  # patched, not rebuilt
        assert list(element["answers"]) == [str(ahead), str(voted), str(behind)]
    # 12 -> 13 passes `ahead`: a rebuild, and the order follows.
    assert (await qa_client.put(vote)).status == 204
    element = await element_of(qa_conn, question)
    assert element["answers"][str(voted)]["helpfulness"] == 13
    assert list(element["answers"]) == [str(voted), str(ahead), str(behind)]
    assert element["answers"][str(ahead)]["body"] == "behind the back"
    # Once rebuilt (the answer written through the triggers), all matches the tables.
    await qa_conn.execute("UPDATE answers SET body = 'after' WHERE id = $1", ahead)
    await assert_pages_match(db, 18)


async def test_an_answer_vote_on_a_row_out_of_step_rebuilds_it(qa_client, qa_conn):
    """The answer's patch applies only where its digits hold what the vote
    changed from; a row out of step with the tables is rebuilt instead."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 19)
    answer = await add_answer(qa_conn, question, helpful=4)
    await qa_conn.execute("SET session_replication_role = replica")
    await qa_conn.execute("UPDATE answers SET helpful = 40 WHERE id = $1", answer)
    await qa_conn.execute("RESET session_replication_role")
    update = "UPDATE answers SET helpful = helpful + 1 WHERE id = $1"
    calls = await rebuilds_and_patches(qa_conn, update, answer)
    assert calls == {"qa_patch_answer_helpful": 1, "qa_refresh_question_documents": 1}
    assert (await element_of(qa_conn, question))["answers"][str(answer)]["helpfulness"] == 41
    await assert_pages_match(db, 19)


async def test_a_new_answer_without_photos_goes_into_the_element_in_place(qa_client, qa_conn):
    """An answer without photos is put into its question's element where the
    list's order puts it (007), without a rebuild: an answer changed behind
    the triggers' back stays as it was. With photos, or several answers in
    one statement, the element is rebuilt."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 20)
    insert = queries.INSERT_ANSWER_NO_PHOTOS
    # The first answer: into the empty "answers" object.
    calls = await rebuilds_and_patches(qa_conn, insert, question, "first", "n", "n@x.io")
    assert calls == {"qa_patch_new_answer": 1}
    [first] = [int(k) for k in (await element_of(qa_conn, question))["answers"]]
    voted = await add_answer(qa_conn, question, helpful=5, body="voted")
    await qa_conn.execute("SET session_replication_role = replica")  # no triggers
    await qa_conn.execute("UPDATE answers SET body = 'behind the back' WHERE id = $1", voted)
    await qa_conn.execute("RESET session_replication_role")
    # Between the voted one (5) and the first (0, a smaller id).
    tricky = 'a "7":{"id":7, and }} inside'
    calls = await rebuilds_and_patches(qa_conn, insert, question, tricky, tricky, "n@x.io")
    assert calls == {"qa_patch_new_answer": 1}
    element = await element_of(qa_conn, question)
    second = max(int(k) for k in element["answers"])
    assert list(element["answers"]) == [str(voted), str(second), str(first)]
    assert element["answers"][str(second)]["body"] == tricky
    assert element["answers"][str(voted)]["body"] == "voted"  # patched, not rebuilt
    # At the end, once every other answer sorts before a new one (helpful 0).
    await qa_conn.execute("UPDATE answers SET helpful = 1 WHERE id = ANY($1)", [first, second])
    calls = await rebuilds_and_patches(qa_conn, insert, question, "last", "n", "n@x.io")
    assert calls == {"qa_patch_new_answer": 1}
    element = await element_of(qa_conn, question)
    last = max(int(k) for k in element["answers"])
    assert list(element["answers"]) == [str(voted), str(second), str(first), str(last)]
    # With photos: rebuilt (the photos trigger's call then finds it done:
    # test_answer_and_photos_rebuild_once_per_statement_not_less).
    photos = [PHOTO.format(7)]
    calls = await rebuilds_and_patches(
        qa_conn, queries.INSERT_ANSWER, question, "photo", "n", "n@x.io", photos
    )
    assert calls == {"qa_patch_new_answer": 1, "qa_refresh_question_documents": 2}
    await assert_pages_match(db, 20)
    # Two answers in one statement: rebuilt.
    calls = await rebuilds_and_patches(
        qa_conn,
        "INSERT INTO answers (question_id, body, answerer_name, answerer_email)"
        " SELECT $1, 'two at once', 'n', 'n@x.io' FROM generate_series(1, 2)",
        question,
    )
    assert calls == {"qa_refresh_question_documents": 1}
    await assert_pages_match(db, 20)


async def test_the_new_write_paths_read_answers_by_index(qa_client, qa_conn):
    """The patches' reads of `answers` are index probes, never a scan: a join
    with the transition table was once planned as a scan of every answer
    (140 ms a new question at SCALE 0.1), which tiny test tables never show.
    Counted with pg_stat_xact_user_tables after 20,000 answers and ANALYZE."""
    question = await add_question(qa_conn, 21)
    answer = await add_answer(qa_conn, question)
    await qa_conn.execute("SET session_replication_role = replica")  # bulk rows, no triggers
    await qa_conn.execute(
        "INSERT INTO answers (question_id, body, answerer_name, answerer_email)"
        " SELECT 1000000 + g, 'bulk', 'n', 'n@x.io' FROM generate_series(1, 20000) g"
    )
    await qa_conn.execute("RESET session_replication_role")
    await qa_conn.execute("ANALYZE answers")
    scans = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'answers'"
    writes = [
        (
            "INSERT INTO questions (product_id, body, asker_name, asker_email)"
            " VALUES (21, 'new', 'n', 'n@x.io')",
            (),
        ),
        (queries.INSERT_ANSWER_NO_PHOTOS, (question, "a", "n", "n@x.io")),
        ("UPDATE answers SET helpful = helpful + 1 WHERE id = $1", (answer,)),
    ]
    for sql, args in writes:
        async with qa_conn.transaction():
            before = await qa_conn.fetchval(scans)
            await qa_conn.execute(sql, *args)
            assert await qa_conn.fetchval(scans) == before, sql


async def test_a_report_deletes_the_element_without_the_rebuild(qa_client, qa_conn):
    """PUT /qa/questions/:id/report deletes the question's element directly
    (009_question_report_patch.sql); any other update of a question still
    rebuilds. The lists match the tables either way."""
    db = qa_client.app[DB]
    reported = await add_question(qa_conn, 17, helpful=5)
    kept = await add_question(qa_conn, 17, helpful=1)
    await add_answer(qa_conn, reported)
    assert await rebuilds_and_patches(qa_conn, queries.QUESTION_REPORT, reported) == {}
    assert not await has_element(qa_conn, reported)
    served = orjson.loads(await queries.questions_page(db, 17, 1, 5))
    assert [q["question_id"] for q in served["results"]] == [kept]
    await assert_pages_match(db, 17)
    edit = "UPDATE questions SET body = 'edited' WHERE id = $1"
    assert await rebuilds_and_patches(qa_conn, edit, kept) == {"qa_refresh_question_documents": 1}
    await assert_pages_match(db, 17)


async def test_an_answer_during_a_report_leaves_no_element(qa_client, qa_conn, connect, qa_db):
    """An answer (with a photo: the full rebuild) written while its question's
    report is uncommitted waits for the report's lock, then reads the question
    as reported and builds nothing. Without the lock it would have read the
    question as visible and written the element back after the delete."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 18)
    other = await connect(qa_db)
    async with qa_conn.transaction():
        await qa_conn.execute(queries.QUESTION_REPORT, question)
        late = asyncio.create_task(
            other.fetchrow(queries.INSERT_ANSWER, question, "b", "n", "n@x.io", [PHOTO.format(9)])
        )
        await wait_until_blocked(qa_conn, other.get_server_pid())
    await late
    assert not await has_element(qa_conn, question)
    await assert_pages_match(db, 18)


async def test_an_answer_report_cuts_its_member_without_the_rebuild(qa_client, qa_conn):
    """PUT /qa/answers/:id/report cuts the answer out of its question's
    element in place (010_answer_report_patch.sql): in the middle, first,
    last and only, the element then matches the tables byte for byte."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 19)
    first, middle, third, last = [
        await add_answer(qa_conn, question, helpful=h, photos=[PHOTO.format(h)])
        for h in (9, 5, 3, 1)
    ]
    for answer in (middle, first, last, third):  # the only one left comes last
        calls = await rebuilds_and_patches(qa_conn, queries.ANSWER_REPORT, answer)
        assert calls == {"qa_patch_answer_report": 1}
        assert str(answer) not in (await element_of(qa_conn, question))["answers"]
        await assert_pages_match(db, 19)
    assert (await element_of(qa_conn, question))["answers"] == {}


async def test_an_answer_report_on_an_element_out_of_step_rebuilds_it(qa_client, qa_conn):
    """When the element's order is not the table's (a vote written behind
    the triggers' back), the cut would take a second member with it: the
    report rebuilds the element instead."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 20)
    first, second, third = [await add_answer(qa_conn, question, helpful=h) for h in (9, 5, 3)]
    await qa_conn.execute("SET session_replication_role = replica")  # no triggers
    await qa_conn.execute("UPDATE answers SET helpful = 7 WHERE id = $1", third)
    await qa_conn.execute("RESET session_replication_role")
    calls = await rebuilds_and_patches(qa_conn, queries.ANSWER_REPORT, first)
    assert calls == {"qa_patch_answer_report": 1, "qa_refresh_question_documents": 1}
    embedded = (await element_of(qa_conn, question))["answers"]
    assert list(embedded) == [str(third), str(second)]
    await assert_pages_match(db, 20)
