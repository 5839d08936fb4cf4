"""The writes that patch a question's read-model element in place instead of
rebuilding it (migrations 005-007, 009, 010, 012): each patch is checked against
the live query byte for byte, shown to skip the rebuild, and shown to fall
back to the rebuild when the element is out of step with the tables."""

from __future__ import annotations

import asyncio

import orjson

from services.common.resources import DB
from services.qa import queries
from tests.lock_waits import wait_until_blocked

from .helpers import PHOTO, add_answer, add_question, answer_body
from .read_model_checks import (
    assert_pages_match,
    element_of,
    has_element,
    rebuilds_and_patches,
)


async def out_of_step(conn, product: int, third_helpful: int) -> tuple[int, list[int]]:
    """A question with answers at 9, 5 and 3 votes, then the third's count set
    to `third_helpful` behind the triggers' back: its element out of step."""
    question = await add_question(conn, product)
    answers = [await add_answer(conn, question, helpful=h) for h in (9, 5, 3)]
    await conn.execute("SET session_replication_role = replica")  # no triggers
    await conn.execute("UPDATE answers SET helpful = $1 WHERE id = $2", third_helpful, answers[2])
    await conn.execute("RESET session_replication_role")
    return question, answers


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


async def test_an_answer_vote_patches_the_number_or_moves_the_member(qa_client, qa_conn):
    """PUT /qa/answers/:id/helpful patches the answer's number in place (006)
    while the answers keep their order, and moves its member in place when
    the vote moves it past others (012): either way an answer changed behind
    the triggers' back stays as it was (a rebuild would pick it up)."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 18)
    tricky = 'says ,"helpfulness":3, and "7":{"id":7,'
    voted = await add_answer(qa_conn, question, helpful=9, body=tricky, name=tricky)
    ahead = await add_answer(qa_conn, question, helpful=12)
    behind = await add_answer(qa_conn, question, helpful=9)  # same helpful, larger id: first
    await qa_conn.execute("SET session_replication_role = replica")  # no triggers
    await qa_conn.execute("UPDATE answers SET body = 'behind the back' WHERE id = $1", ahead)
    await qa_conn.execute("RESET session_replication_role")
    update = "UPDATE answers SET helpful = helpful + 1 WHERE id = $1"
    # 9 -> 10: `behind` (9, larger id) was before it and is after it now: moved.
    # 10 -> 11 and 11 -> 12 (12 ties with `ahead`, whose larger id keeps it
    # first): in place. 12 -> 13 passes `ahead`: moved.
    orders = {
        10: [ahead, voted, behind],
        11: [ahead, voted, behind],
        12: [ahead, voted, behind],
        13: [voted, ahead, behind],
    }
    for expected, order in orders.items():
        calls = await rebuilds_and_patches(qa_conn, update, voted)
        assert calls == {"qa_patch_answer_helpful": 1}, expected
        element = await element_of(qa_conn, question)
        assert list(element["answers"]) == [str(a) for a in order]
        assert element["answers"][str(voted)]["helpfulness"] == expected
        assert element["answers"][str(voted)]["body"] == tricky
        assert element["answers"][str(voted)]["answerer_name"] == tricky
        assert element["answers"][str(ahead)]["body"] == "Very."  # patched, not rebuilt
    # Once rebuilt (the answer written through the triggers), all matches the tables.
    await qa_conn.execute("UPDATE answers SET body = 'after' WHERE id = $1", ahead)
    await assert_pages_match(db, 18)


async def test_an_answer_vote_that_moves_it_matches_the_tables(qa_client, qa_conn):
    """Moves (012) from the last member to the first, from the middle, past
    several at once, between the only two, with photos, and across a digit
    count: after each, the element matches the live query byte for byte,
    with no rebuild."""
    db = qa_client.app[DB]
    question = await add_question(qa_conn, 22)
    low, tied_a, tied_b, high = [
        await add_answer(qa_conn, question, helpful=h, photos=[PHOTO.format(i)] * (i % 2))
        for i, h in enumerate((0, 9, 9, 99))
    ]
    votes = [
        low,  # 0 -> 1: still last (no move), in place
        tied_a,  # 9 -> 10: past tied_b (the larger id), and 9 -> 10 digits
        tied_b,  # 9 -> 10: past tied_a, now the same count with a smaller id
        low,  # 1 -> 2: in place
        high,  # 99 -> 100: first already: in place
    ]
    for answer in votes:
        calls = await rebuilds_and_patches(qa_conn, queries.ANSWER_HELPFUL, answer)
        assert calls == {"qa_patch_answer_helpful": 1}
        await assert_pages_match(db, 22)
    await qa_conn.execute("UPDATE answers SET helpful = 100 WHERE id = ANY($1)", [low])
    # low (100, the smallest id) last; its vote to 101 passes all three at once.
    calls = await rebuilds_and_patches(qa_conn, queries.ANSWER_HELPFUL, low)
    assert calls == {"qa_patch_answer_helpful": 1}
    assert next(iter((await element_of(qa_conn, question))["answers"])) == str(low)
    await assert_pages_match(db, 22)
    # Two answers at 0: the vote on the second (smaller id) puts it first.
    pair = await add_question(qa_conn, 22)
    first, second = [await add_answer(qa_conn, pair) for _ in range(2)]
    calls = await rebuilds_and_patches(qa_conn, queries.ANSWER_HELPFUL, first)
    assert calls == {"qa_patch_answer_helpful": 1}
    assert list((await element_of(qa_conn, pair))["answers"]) == [str(first), str(second)]
    await assert_pages_match(db, 22)


async def test_an_answer_vote_that_moves_it_on_an_element_out_of_step_rebuilds_it(
    qa_client, qa_conn
):
    """When the element's order is not the table's (a vote written behind
    the triggers' back), the member's cut would take another with it: the
    vote rebuilds the element instead."""
    db = qa_client.app[DB]
    question, (first, second, third) = await out_of_step(qa_conn, 23, third_helpful=5)
    # second 5 -> 6 passes third (now 5, a larger id), which the element has after it.
    calls = await rebuilds_and_patches(qa_conn, queries.ANSWER_HELPFUL, second)
    assert calls == {"qa_patch_answer_helpful": 1, "qa_refresh_question_documents": 1}
    embedded = (await element_of(qa_conn, question))["answers"]
    assert list(embedded) == [str(first), str(second), str(third)]
    assert embedded[str(third)]["helpfulness"] == 5
    await assert_pages_match(db, 23)


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
    question, (first, second, third) = await out_of_step(qa_conn, 20, third_helpful=7)
    calls = await rebuilds_and_patches(qa_conn, queries.ANSWER_REPORT, first)
    assert calls == {"qa_patch_answer_report": 1, "qa_refresh_question_documents": 1}
    embedded = (await element_of(qa_conn, question))["answers"]
    assert list(embedded) == [str(third), str(second)]
    await assert_pages_match(db, 20)
