"""The invalidation outbox (services/common/outbox.py): a write whose writer
died between its commit and its invalidation is invalidated by the relay of
any other process, and a write whose writer invalidated it is not relayed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from services.common.db import Database
from services.common.outbox import RedisRefused
from services.common.resources import CACHE, DB, OUTBOX
from services.qa import queries as qa_queries
from services.qa.schemas import NewAnswer, NewQuestion
from services.reviews import queries as reviews_queries
from services.reviews.schemas import NewReview

REVIEWS_SETUP = """
INSERT INTO reviews (product_id, rating, body, recommend, reviewer_name, reviewer_email)
VALUES (5, 4, 'first', true, 'a', 'a@example.com'), (5, 3, 'second', false, 'b', 'b@example.com');
INSERT INTO product_ratings (product_id, r3, r4, recommend_false, recommend_true)
VALUES (5, 1, 1, 1, 1);
"""  # ids 1 and 2 (the tests' databases restart their identities)
QA_SETUP = """
INSERT INTO questions (product_id, body, asker_name, asker_email)
VALUES (5, 'fits?', 'a', 'a@example.com'), (5, 'washable?', 'b', 'b@example.com');
INSERT INTO answers (question_id, body, answerer_name, answerer_email)
VALUES (1, 'yes', 'c', 'c@example.com');
"""


@dataclass
class Case:
    service: str
    write: Callable[[Database], Awaitable[Any]]  # the statement the view runs
    reads: tuple[str, ...]  # what the write changes, each in its own cache scope


def new_review(db: Database) -> Awaitable[Any]:
    review = NewReview(
        product_id=5, rating=5, body="b" * 50, recommend=True, name="n", email="n@example.com"
    )
    return reviews_queries.add_review(db, review, {})


def new_answer(db: Database) -> Awaitable[Any]:
    return qa_queries.add_answer(db, 1, NewAnswer(body="no", name="d", email="d@example.com"))


def new_question(db: Database) -> Awaitable[Any]:
    return qa_queries.add_question(
        db, NewQuestion(body="new?", name="e", email="e@example.com", product_id=5)
    )


REVIEW_READS = ("/reviews/?product_id=5", "/reviews/meta?product_id=5")
QUESTION_READS = ("/qa/questions?product_id=5",)
ANSWER_READS = ("/qa/questions?product_id=5", "/qa/questions/1/answers")
CASES = {
    "add_review": Case("reviews", new_review, REVIEW_READS),
    "review_helpful": Case(
        "reviews", lambda db: reviews_queries.mark_helpful(db, 1), REVIEW_READS[:1]
    ),
    "review_report": Case("reviews", lambda db: reviews_queries.report(db, 1), REVIEW_READS),
    "add_question": Case("qa", new_question, QUESTION_READS),
    "add_answer": Case("qa", new_answer, ANSWER_READS),
    "question_helpful": Case(
        "qa", lambda db: qa_queries.mark_question_helpful(db, 2), QUESTION_READS
    ),
    "question_report": Case("qa", lambda db: qa_queries.report_question(db, 2), QUESTION_READS),
    "answer_helpful": Case("qa", lambda db: qa_queries.mark_answer_helpful(db, 1), ANSWER_READS),
    "answer_report": Case("qa", lambda db: qa_queries.report_answer(db, 1), ANSWER_READS),
}


async def bodies(client, paths: tuple[str, ...]) -> list[bytes]:
    out = []
    for path in paths:
        resp = await client.get(path)
        assert resp.status == 200, path
        out.append(await resp.read())
    return out


async def outbox_rows(conn: asyncpg.Connection) -> list[list[str]]:
    return [r[0] for r in await conn.fetch("SELECT scopes FROM cache_outbox ORDER BY id")]


@pytest.mark.parametrize("name", list(CASES))
async def test_a_write_whose_writer_died_after_its_commit_is_relayed(
    name, service_client, reviews_db, qa_db, connect
):
    case = CASES[name]
    url = reviews_db if case.service == "reviews" else qa_db
    reader = await service_client(case.service, url, wait_cache=True)
    # Another process of the service: its relay picks up the dead writer's row.
    relay = await service_client(case.service, url, wait_cache=True)
    conn = await connect(url)
    await conn.execute(REVIEWS_SETUP if case.service == "reviews" else QA_SETUP)
    before = await bodies(reader, case.reads)
    assert await reader.app[CACHE].drain()
    # The writer commits the statement its view runs, then dies before its
    # invalidation: the committed write is in the tables, and in the outbox.
    await case.write(relay.app[DB])
    assert len(await outbox_rows(conn)) == 1
    assert await bodies(reader, case.reads) == before  # cached: nobody was told

    assert await relay.app[OUTBOX].relay_once(age_s=0) == 1
    assert await outbox_rows(conn) == []
    assert await reader.app[CACHE].drain()
    after = await bodies(reader, case.reads)
    assert all(a != b for a, b in zip(after, before, strict=True)), (before, after)


async def test_the_relay_runs_by_itself(service_client, reviews_db, connect):
    reader = await service_client("reviews", reviews_db, wait_cache=True)
    conn = await connect(reviews_db)
    await conn.execute(REVIEWS_SETUP)
    before = await bodies(reader, REVIEW_READS)
    relayed = reader.app[OUTBOX].relayed()
    await new_review(reader.app[DB])  # committed; its writer "died"
    # The background relay takes rows older than RELAY_AGE_S (1 s).
    assert await asyncio.wait_for(relayed, timeout=10) == 1
    assert await reader.app[CACHE].drain()
    assert (await bodies(reader, REVIEW_READS))[0] != before[0]


async def test_a_confirmed_write_is_acknowledged_not_relayed(service_client, qa_db, connect):
    client = await service_client("qa", qa_db, wait_cache=True)
    conn = await connect(qa_db)
    await conn.execute(QA_SETUP)
    writes = [
        client.post(
            "/qa/questions", json={"body": "q", "name": "n", "email": "n@x.io", "product_id": 5}
        ),
        client.post("/qa/questions/1/answers", json={"body": "a", "name": "n", "email": "n@x.io"}),
        client.put("/qa/questions/2/helpful"),
        client.put("/qa/answers/1/report"),
    ]
    for write in writes:
        assert (await write).status in (201, 204)
    assert len(await outbox_rows(conn)) == 4
    await client.app[OUTBOX].delete_acknowledged()
    assert await outbox_rows(conn) == []
    assert await client.app[OUTBOX].relay_once(age_s=0) == 0
    # Writes that change nothing leave no row.
    assert (await client.put("/qa/questions/99/helpful")).status == 404
    assert (
        await client.post(
            "/qa/questions/99/answers", json={"body": "a", "name": "n", "email": "n@x.io"}
        )
    ).status == 404
    assert await outbox_rows(conn) == []


async def test_a_refused_review_leaves_no_outbox_row(reviews_client_outbox):
    client, conn = reviews_client_outbox
    body = {
        "product_id": 5,
        "rating": 5,
        "body": "b" * 50,
        "recommend": True,
        "name": "n",
        "email": "n@example.com",
        "characteristics": {"77": 3},  # not product 5's
    }
    assert (await client.post("/reviews", json=body)).status == 422
    assert (await client.put("/reviews/99/helpful")).status == 404
    assert await outbox_rows(conn) == []


@pytest.fixture
async def reviews_client_outbox(service_client, reviews_db, connect):
    client = await service_client("reviews", reviews_db, wait_cache=True)
    conn = await connect(reviews_db)
    await conn.execute(REVIEWS_SETUP)
    return client, conn


async def test_rows_wait_while_redis_is_down_and_are_relayed_when_it_is_back(
    aiohttp_client, reviews_db, private_redis, connect
):
    from services.reviews.app import create_app
    from tests.conftest import settings_for, truncate_all

    await truncate_all(reviews_db)
    client = await aiohttp_client(
        create_app(settings_for("reviews", reviews_db, private_redis.url))
    )
    assert await client.app[CACHE].wait_ready(5)
    conn = await connect(reviews_db)
    await conn.execute(REVIEWS_SETUP)
    private_redis.stop()
    assert (await client.put("/reviews/1/helpful")).status == 204  # committed, not confirmed
    await client.app[OUTBOX].delete_acknowledged()
    assert len(await outbox_rows(conn)) == 1  # kept: its invalidation did not go through
    with pytest.raises(RedisRefused):
        await client.app[OUTBOX].relay_once(age_s=0)
    assert await outbox_rows(conn) == [["p:5"]]  # the claim rolled back
    private_redis.start()
    assert await client.app[CACHE].wait_ready(5)
    assert await client.app[OUTBOX].relay_once(age_s=0) == 1
    assert await outbox_rows(conn) == []
