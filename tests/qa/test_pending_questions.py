"""An answer's write marks its question pending instead of rebuilding its
read-model element (migrations/012_pending_questions.sql); the relay
(services/qa/read_model_relay.py) rebuilds it after the commit, and until then
the product's pages come from the tables (queries.questions_page)."""

from __future__ import annotations

import asyncio

import orjson

from services.common.resources import DB
from services.qa import queries, read_model_relay
from services.qa.data.check_read_model import OneConnection
from services.qa.read_model_relay import RELAY
from tests.lock_waits import wait_until_blocked

from .helpers import PHOTO, add_answer, add_question, answer_body
from .read_model_checks import assert_pages_match, element_of, rebuilds_and_patches

PENDING = "SELECT question_id, product_id FROM question_documents_pending ORDER BY 1"
MARKED = {"qa_mark_question_pending": 1}


async def test_an_answer_write_marks_its_question_and_rebuilds_nothing(qa_client, qa_conn):
    """Each answer write (the API's statements and a DELETE) marks its
    question once, with its product, and calls no rebuild; one that changes
    nothing the list shows marks nothing. The relay's rebuild then matches the
    tables byte for byte."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 30)
    answer = await add_answer(qa_conn, question)
    writes = [
        (queries.INSERT_ANSWER_NO_PHOTOS, (question, "plain", "n", "n@x.io"), MARKED),
        (queries.INSERT_ANSWER, (question, "photos", "n", "n@x.io", [PHOTO.format(1)]), MARKED),
        (queries.ANSWER_HELPFUL, (answer,), MARKED),
        (queries.ANSWER_REPORT, (answer,), MARKED),
        (queries.ANSWER_REPORT, (answer,), {}),  # reported already: the list cannot show it
        (queries.ANSWER_HELPFUL, (answer,), {}),  # a reported answer's vote: likewise
        ("DELETE FROM answers WHERE body = 'plain'", (), MARKED),
    ]
    for sql, args, calls in writes:
        assert await rebuilds_and_patches(qa_conn, sql, *args) == calls, sql
        expected = [(question, 30)] if calls else []
        assert [tuple(r) for r in await qa_conn.fetch(PENDING)] == expected, sql
        await assert_pages_match(db, 30)  # rebuilds the pending question
    element = await element_of(qa_conn, question)
    assert [a["body"] for a in element["answers"].values()] == ["photos"]


async def test_a_pending_product_is_served_from_the_tables(qa_client, qa_conn):
    """While a product has a pending question its pages come from the tables,
    whatever question_documents holds; without one, from question_documents."""
    question = await add_question(qa_conn, 31)
    await add_answer(qa_conn, question, body="current")
    db = OneConnection(qa_conn)
    live = await queries.questions_page_from_tables(db, 31, 1, 5)
    tx = qa_conn.transaction()  # rolled back: nothing here is committed
    await tx.start()
    try:
        await qa_conn.execute(
            "UPDATE question_documents SET element = convert_to('{\"stale\":true}', 'UTF8')"
            " WHERE question_id = $1",
            question,
        )
        await qa_conn.execute("INSERT INTO question_documents_pending VALUES ($1, 31)", question)
        assert await queries.questions_page(db, 31, 1, 5) == live
        stale = await queries.questions_page_from_documents(db, 31, 1, 5)
        assert stale == b'{"product_id":"31","results":[{"stale":true}]}'
        await qa_conn.execute("DELETE FROM question_documents_pending")
        assert await queries.questions_page(db, 31, 1, 5) == stale
    finally:
        await tx.rollback()
    await assert_pages_match(qa_client.app[DB], 31)


async def test_a_write_to_a_question_being_rebuilt_marks_it_again(
    qa_client, qa_conn, connect, qa_db
):
    """A vote on a question whose rebuild is under way (claimed, not yet
    committed) waits for the rebuild's commit, then marks the question again:
    the rebuild could not see it, so the next one must. (ON CONFLICT DO
    NOTHING would not wait and would leave the vote out of the element.)"""
    question = await add_question(qa_conn, 32)
    first, second = await add_answer(qa_conn, question), await add_answer(qa_conn, question)
    other = await connect(qa_db)
    async with qa_conn.transaction():
        await qa_conn.execute(queries.ANSWER_HELPFUL, first)
        assert await qa_conn.fetchval("SELECT qa_rebuild_pending_questions(500)") == 1
        late = asyncio.create_task(other.execute(queries.ANSWER_HELPFUL, second))
        await wait_until_blocked(qa_conn, other.get_server_pid())
    await late
    assert [tuple(r) for r in await qa_conn.fetch(PENDING)] == [(question, 32)]
    element = await element_of(qa_conn, question)
    assert {a["id"]: a["helpfulness"] for a in element["answers"].values()} == {
        first: 1,
        second: 1,
    }
    await assert_pages_match(qa_client.app[DB], 32)


async def wait_rebuilt(app, conn) -> None:
    """Until the app's relay has rebuilt every pending question (each of its
    rounds ends with a future; bounded)."""
    relay = app[RELAY]
    for _ in range(50):
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM question_documents_pending)"):
            return
        await asyncio.wait_for(relay.next_round(), 10)
    raise AssertionError("the relay left questions pending")


async def test_the_relay_rebuilds_after_the_apps_answer_writes(qa_client, qa_conn):
    """The app's own answer writes wake its relay: with nobody draining by
    hand, the element follows each of them."""
    question = await add_question(qa_conn, 33)
    resp = await qa_client.post(
        f"/qa/questions/{question}/answers", json=answer_body(body="by the api")
    )
    assert resp.status == 201
    await wait_rebuilt(qa_client.app, qa_conn)
    stored = await queries.questions_page_from_documents(qa_client.app[DB], 33, 1, 5)
    [answer] = orjson.loads(stored)["results"][0]["answers"].values()
    assert answer["body"] == "by the api" and answer["helpfulness"] == 0
    assert (await qa_client.put(f"/qa/answers/{answer['id']}/helpful")).status == 204
    await wait_rebuilt(qa_client.app, qa_conn)
    stored = await queries.questions_page_from_documents(qa_client.app[DB], 33, 1, 5)
    assert orjson.loads(stored)["results"][0]["answers"][str(answer["id"])]["helpfulness"] == 1


async def test_the_relay_finds_rows_it_was_not_told_of(service_client, qa_db, qa_conn, monkeypatch):
    """A question marked by a write outside the app (another process, SQL by
    hand) is rebuilt by the relay's own look every POLL_S."""
    monkeypatch.setattr(read_model_relay, "POLL_S", 0.05)
    client = await service_client("qa", qa_db)
    question = await add_question(qa_conn, 34)
    await qa_conn.execute(
        "INSERT INTO answers (question_id, body, answerer_name, answerer_email)"
        " VALUES ($1, 'by hand', 'n', 'n@x.io')",
        question,
    )
    await wait_rebuilt(client.app, qa_conn)
    stored = await queries.questions_page_from_documents(client.app[DB], 34, 1, 5)
    assert b'"by hand"' in stored
