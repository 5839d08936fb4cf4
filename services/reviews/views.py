"""Thin handlers: parse and validate, then read through the cache or write and
invalidate. SQL and response shaping live in queries.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from services.common.db import Database
from services.common.errors import ApiError
from services.common.resources import DB, OUTBOX
from services.common.responses import cached_json, written
from services.common.validation import MAX_ID, parse_id, parse_paging, read_body

from . import queries
from .schemas import NewReview

# `relevant` and `helpful` share one order, so they share cache entries too.
_SORT_KEYS = {"newest": "newest", "helpful": "helpful", "relevant": "helpful"}


def product_scope(product_id: int) -> str:
    return f"p:{product_id}"


async def list_reviews(request: web.Request) -> web.Response:
    query = request.query
    product_id = parse_id(query.get("product_id"), "product_id")
    page, count = parse_paging(query)
    sort = query.get("sort") or "relevant"
    sort_key = _SORT_KEYS.get(sort)
    if sort_key is None:
        raise ApiError(400, "sort must be one of newest, helpful, relevant")
    db = request.app[DB]
    return await cached_json(
        request,
        product_scope(product_id),
        f"l:{sort_key}:{page}:{count}",
        lambda: queries.review_page(db, product_id, sort_key, page, count),
    )


async def review_meta(request: web.Request) -> web.Response:
    product_id = parse_id(request.query.get("product_id"), "product_id")
    db = request.app[DB]
    return await cached_json(
        request, product_scope(product_id), "meta", lambda: queries.review_meta(db, product_id)
    )


async def add_review(request: web.Request) -> web.Response:
    review = await read_body(request, NewReview)
    scores = {int(k): v for k, v in review.characteristics.items()}
    too_big = [k for k in scores if k > MAX_ID]
    if too_big:
        raise ApiError(422, f"characteristics: {too_big[0]} is not a valid characteristic id")
    # The characteristic check and every write, atomically.
    foreign_id, _, outbox_id = await queries.add_review(request.app[DB], review, scores)
    if foreign_id is not None:
        raise ApiError(
            422,
            f"characteristics: {foreign_id} is not a characteristic of product {review.product_id}",
        )
    marker = await request.app[OUTBOX].invalidate(outbox_id, product_scope(review.product_id))
    return written(request, 201, marker)


async def _update_review(
    request: web.Request, update: Callable[[Database, int], Awaitable[asyncpg.Record | None]]
) -> web.Response:
    review_id = parse_id(request.match_info["review_id"], "review_id")
    row = await update(request.app[DB], review_id)
    if row is None:
        raise ApiError(404, f"review_id {review_id} does not exist")
    product_id, outbox_id = row
    marker = await request.app[OUTBOX].invalidate(outbox_id, product_scope(product_id))
    return written(request, 204, marker)


async def mark_helpful(request: web.Request) -> web.Response:
    return await _update_review(request, queries.mark_helpful)


async def report(request: web.Request) -> web.Response:
    return await _update_review(request, queries.report)
