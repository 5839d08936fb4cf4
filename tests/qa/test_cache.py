"""Every write invalidates exactly the cached pages it changes.

Setup: product P has questions Q (the write target) and R; Q has answers A
(the write target) and B. Product O is unrelated. Each scope carries a
sentinel written in SQL behind the service's back (R's body for P's question
pages, B's body for Q's answer pages, O's question body): a read still showing
the old text proves the page is served from the cache, and the sentinel
showing after a write proves that write invalidated that scope, and only it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from services.common.resources import CACHE, DB
from services.qa import queries
from services.qa.views import answers_key, product_scope, question_scope, questions_key

from .helpers import add_answer, add_question, answer_body, answers, question_body, questions

P, OTHER = 60, 61
SENTINEL = "changed behind the cache's back"


@dataclass
class World:
    q: int
    r: int
    a: int
    b: int
    o: int


async def build(conn) -> World:
    q = await add_question(conn, P, helpful=5)
    r = await add_question(conn, P, helpful=1)
    o = await add_question(conn, OTHER)
    a = await add_answer(conn, q, helpful=5)
    b = await add_answer(conn, q, helpful=1)
    return World(q, r, a, b, o)


@dataclass
class Views:
    p: dict  # GET /qa/questions?product_id=P
    qa: dict  # GET /qa/questions/Q/answers
    o: dict  # GET /qa/questions?product_id=OTHER


async def read_all(client, w: World) -> Views:
    return Views(
        await questions(client, P), await answers(client, w.q), await questions(client, OTHER)
    )


def by_id(view: dict, question_id: int) -> dict | None:
    return next((q for q in view["results"] if q["question_id"] == question_id), None)


def p_sentinel(v: Views, w: World) -> bool:
    return by_id(v.p, w.r)["question_body"] == SENTINEL


def qa_sentinel(v: Views, w: World) -> bool:
    return next(a for a in v.qa["results"] if a["answer_id"] == w.b)["body"] == SENTINEL


def o_sentinel(v: Views, w: World) -> bool:
    return by_id(v.o, w.o)["question_body"] == SENTINEL


@dataclass
class Write:
    send: Callable[[object, World], Awaitable[object]]
    scopes: set[str]  # which of "p" and "qa" it must invalidate
    shows: Callable[[Views, World], bool]  # the write's own effect is visible


def _embedded(v: Views, w: World) -> dict:
    return by_id(v.p, w.q)["answers"]


WRITES = {
    "post_question": Write(
        lambda c, w: c.post("/qa/questions", json=question_body(P)),
        {"p"},
        lambda v, w: len(v.p["results"]) == 3,
    ),
    "post_answer": Write(
        lambda c, w: c.post(f"/qa/questions/{w.q}/answers", json=answer_body()),
        {"p", "qa"},
        lambda v, w: len(v.qa["results"]) == 3 and len(_embedded(v, w)) == 3,
    ),
    "question_helpful": Write(
        lambda c, w: c.put(f"/qa/questions/{w.q}/helpful"),
        {"p"},
        lambda v, w: by_id(v.p, w.q)["question_helpfulness"] == 6,
    ),
    "question_report": Write(
        lambda c, w: c.put(f"/qa/questions/{w.q}/report"),
        {"p"},
        lambda v, w: by_id(v.p, w.q) is None,
    ),
    "answer_helpful": Write(
        lambda c, w: c.put(f"/qa/answers/{w.a}/helpful"),
        {"p", "qa"},
        lambda v, w: (
            v.qa["results"][0]["helpfulness"] == 6 and _embedded(v, w)[str(w.a)]["helpfulness"] == 6
        ),
    ),
    "answer_report": Write(
        lambda c, w: c.put(f"/qa/answers/{w.a}/report"),
        {"p", "qa"},
        lambda v, w: (
            [a["answer_id"] for a in v.qa["results"]] == [w.b]
            and list(_embedded(v, w)) == [str(w.b)]
        ),
    ),
}


async def plant_sentinels(conn, w: World) -> None:
    await conn.execute("UPDATE questions SET body = $1 WHERE id = ANY($2)", SENTINEL, [w.r, w.o])
    await conn.execute("UPDATE answers SET body = $1 WHERE id = $2", SENTINEL, w.b)


@pytest.mark.parametrize("name", list(WRITES))
async def test_write_invalidates_exactly_its_scopes(qa_client, qa_conn, name):
    write = WRITES[name]
    w = await build(qa_conn)
    await read_all(qa_client, w)  # a first miss is not cached (admission.py): the second is
    before = await read_all(qa_client, w)
    assert not write.shows(before, w)
    await plant_sentinels(qa_conn, w)
    cached = await read_all(qa_client, w)
    assert cached == before  # all three pages come from the cache

    resp = await write.send(qa_client, w)
    assert resp.status in (201, 204), await resp.text()

    after = await read_all(qa_client, w)
    assert write.shows(after, w)  # read-your-writes
    assert p_sentinel(after, w) == ("p" in write.scopes)
    assert qa_sentinel(after, w) == ("qa" in write.scopes)
    assert not o_sentinel(after, w)  # another product's page is left alone


@pytest.mark.parametrize("name", list(WRITES))
async def test_read_racing_a_write_never_fills_stale(qa_client, qa_conn, name):
    """A read that loaded before the write and tries to fill after it
    (the slow reader) must not put its pre-write page back into either tier."""
    write = WRITES[name]
    w = await build(qa_conn)
    app = qa_client.app
    cache, db = app[CACHE], app[DB]
    release = asyncio.Event()
    waiting: list[None] = []
    both_waiting = asyncio.Event()

    def slow(load: Callable[[], Awaitable[bytes]]) -> Callable[[], Awaitable[bytes]]:
        async def loader() -> bytes:
            body = await load()  # read before the write ...
            waiting.append(None)
            if len(waiting) == 2:
                both_waiting.set()
            await release.wait()  # ... and fill after it
            return body

        return loader

    readers = [
        asyncio.create_task(
            cache.get(
                product_scope(P),
                questions_key(1, 5),
                slow(lambda: queries.questions_page(db, P, 1, 5)),
            )
        ),
        asyncio.create_task(
            cache.get(
                question_scope(w.q),
                answers_key(1, 5),
                slow(lambda: queries.answers_page(db, w.q, 1, 5)),
            )
        ),
    ]
    async with asyncio.timeout(5):
        await both_waiting.wait()  # both loads have read Postgres and are waiting

    resp = await write.send(qa_client, w)
    assert resp.status in (201, 204), await resp.text()
    release.set()
    await asyncio.gather(*readers)
    assert await cache.drain()  # the refused Redis fills run in the background

    after = await read_all(qa_client, w)
    assert write.shows(after, w)
    again = await read_all(qa_client, w)  # now served from the cache: still fresh
    assert write.shows(again, w)
