"""Thin handlers: parse and validate, then read through the cache or write and
invalidate. SQL and response building live in queries.py.

Cache scopes: `p:<product_id>` holds a product's question pages (with their
embedded answers), `q:<question_id>` a question's answer pages. A write
invalidates, after it commits, every scope whose answers it changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from services.common.db import Database
from services.common.errors import ApiError
from services.common.resources import DB, OUTBOX
from services.common.responses import cached_json, written
from services.common.validation import parse_id, parse_paging, read_body

from . import queries
from .schemas import NewAnswer, NewQuestion


def product_scope(product_id: int) -> str:
    return f"p:{product_id}"


def question_scope(question_id: int) -> str:
    return f"q:{question_id}"


def questions_key(page: int, count: int) -> str:
    return f"l:{page}:{count}"


def answers_key(page: int, count: int) -> str:
    return f"a:{page}:{count}"


async def list_questions(request: web.Request) -> web.Response:
    query = request.query
    product_id = parse_id(query.get("product_id"), "product_id")
    page, count = parse_paging(query)
    db = request.app[DB]
    return await cached_json(
        request,
        product_scope(product_id),
        questions_key(page, count),
        lambda: queries.questions_page(db, product_id, page, count),
    )


async def list_answers(request: web.Request) -> web.Response:
    question_id = parse_id(request.match_info["question_id"], "question_id")
    page, count = parse_paging(request.query)
    db = request.app[DB]

    async def load() -> bytes:
        body = await queries.answers_page(db, question_id, page, count)
        if body is None:  # raised inside the loader: a 404 is never cached
            raise ApiError(404, f"question_id {question_id} does not exist")
        return body

    return await cached_json(request, question_scope(question_id), answers_key(page, count), load)


async def add_question(request: web.Request) -> web.Response:
    question = await read_body(request, NewQuestion)
    outbox_id = await queries.add_question(request.app[DB], question)
    marker = await request.app[OUTBOX].invalidate(outbox_id, product_scope(question.product_id))
    return written(request, 201, marker)


async def add_answer(request: web.Request) -> web.Response:
    # The id first: a malformed path is a 400 whatever the body holds.
    question_id = parse_id(request.match_info["question_id"], "question_id")
    answer = await read_body(request, NewAnswer)
    row = await queries.add_answer(request.app[DB], question_id, answer)
    if row is None:
        raise ApiError(404, f"question_id {question_id} does not exist")
    product_id, outbox_id = row
    marker = await request.app[OUTBOX].invalidate(
        outbox_id, question_scope(question_id), product_scope(product_id)
    )
    return written(request, 201, marker)


async def _update_question(
    request: web.Request, update: Callable[[Database, int], Awaitable[asyncpg.Record | None]]
) -> web.Response:
    question_id = parse_id(request.match_info["question_id"], "question_id")
    row = await update(request.app[DB], question_id)
    if row is None:
        raise ApiError(404, f"question_id {question_id} does not exist")
    product_id, outbox_id = row
    marker = await request.app[OUTBOX].invalidate(outbox_id, product_scope(product_id))
    return written(request, 204, marker)


async def _update_answer(
    request: web.Request, update: Callable[[Database, int], Awaitable[asyncpg.Record | None]]
) -> web.Response:
    answer_id = parse_id(request.match_info["answer_id"], "answer_id")
    row = await update(request.app[DB], answer_id)
    if row is None:
        raise ApiError(404, f"answer_id {answer_id} does not exist")
    question_id, product_id, outbox_id = row
    scopes = [question_scope(question_id)]
    if product_id is not None:
        scopes.append(product_scope(product_id))
    marker = await request.app[OUTBOX].invalidate(outbox_id, *scopes)
    return written(request, 204, marker)


async def mark_question_helpful(request: web.Request) -> web.Response:
    return await _update_question(request, queries.mark_question_helpful)


async def report_question(request: web.Request) -> web.Response:
    return await _update_question(request, queries.report_question)


async def mark_answer_helpful(request: web.Request) -> web.Response:
    return await _update_answer(request, queries.mark_answer_helpful)


async def report_answer(request: web.Request) -> web.Response:
    return await _update_answer(request, queries.report_answer)
