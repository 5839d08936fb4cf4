"""Thin handlers: parse and validate, then read through the cache (catalogue)
or straight from Postgres (carts, which are per session and never cached).
SQL and response shaping live in queries.py."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.common.db import Database
from services.common.errors import ApiError
from services.common.resources import DB
from services.common.responses import cached_json, json_response
from services.common.validation import MAX_ID, parse_id, parse_paging, read_body

from . import queries
from .schemas import CartAdd, Interaction

# The catalogue changes only with a bulk load, which flushes the whole
# namespace; the scopes still group entries the way a write would invalidate.
LIST_SCOPE = "products"

SESSION_COOKIE = "session_id"
SESSION_HEADER = "X-Session-Id"
# Exported sessions are integers, generated ones URL-safe tokens; anything
# else (spaces, quotes, control characters, huge values) is refused.
_SESSION_RE = re.compile(r"[A-Za-z0-9._~-]{1,128}")
SESSION_MAX_AGE_S = 30 * 24 * 3600


def product_scope(product_id: int) -> str:
    return f"p:{product_id}"


def _unknown_product(product_id: int) -> ApiError:
    return ApiError(404, f"product_id {product_id} does not exist")


async def list_products(request: web.Request) -> web.Response:
    page, count = parse_paging(request.query)
    db = request.app[DB]
    return await cached_json(
        request, LIST_SCOPE, f"{page}:{count}", lambda: queries.product_page(db, page, count)
    )


async def _product_part(
    request: web.Request, part: str, load: Callable[[Database, int], Awaitable[bytes]]
) -> web.Response:
    """One product's detail, styles or related list, cached under its scope.
    An unknown product raises out of the cache's load, so its 404 is never cached."""
    product_id = parse_id(request.match_info["product_id"], "product_id")
    db = request.app[DB]
    try:
        return await cached_json(
            request, product_scope(product_id), part, lambda: load(db, product_id)
        )
    except queries.UnknownProduct:
        raise _unknown_product(product_id) from None


async def product_detail(request: web.Request) -> web.Response:
    return await _product_part(request, "detail", queries.product_detail)


async def product_styles(request: web.Request) -> web.Response:
    return await _product_part(request, "styles", queries.product_styles)


async def product_related(request: web.Request) -> web.Response:
    return await _product_part(request, "related", queries.product_related)


# --- cart and interactions ----------------------------------------------------


def _check_session(raw: str, source: str) -> str:
    if _SESSION_RE.fullmatch(raw) is None:
        raise ApiError(400, f"{source} must be 1-128 characters of A-Z a-z 0-9 . _ ~ -")
    return raw


def existing_session(request: web.Request) -> str | None:
    """The caller's session: the X-Session-Id header (API clients), else the cookie."""
    header = request.headers.get(SESSION_HEADER)
    if header is not None:
        return _check_session(header, SESSION_HEADER)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is not None:
        return _check_session(cookie, f"{SESSION_COOKIE} cookie")
    return None


def session_for(request: web.Request) -> tuple[str, bool]:
    """(session id, whether it is new and must be set as a cookie)."""
    session = existing_session(request)
    if session is not None:
        return session, False
    return secrets.token_urlsafe(18), True


def _with_session(response: web.Response, session: str, new: bool) -> web.Response:
    if new:
        response.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=SESSION_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="Lax",
        )
    return response


async def get_cart(request: web.Request) -> web.Response:
    session, new = session_for(request)
    body = await queries.cart_items(request.app[DB], session)
    return _with_session(json_response(body), session, new)


async def _sku_to_add(request: web.Request) -> int:
    """sku_id from the JSON body, else from ?sku_id= (the front end sends either;
    an empty one counts as absent). A malformed ?sku_id= is refused even when
    the body has one: bad input is never silently ignored."""
    raw = request.query.get("sku_id")
    query_sku = parse_id(raw, "sku_id") if raw else None
    sku: int | str | None = None
    if (await request.read()).strip():
        sku = (await read_body(request, CartAdd)).sku_id
    if sku is None:
        if query_sku is None:
            raise ApiError(422, "sku_id is required (JSON body or query string)")
        return query_sku
    sku_id = int(sku)
    if sku_id > MAX_ID:
        raise ApiError(422, f"sku_id: must be a positive integer up to {MAX_ID}")
    return sku_id


async def add_to_cart(request: web.Request) -> web.Response:
    sku_id = await _sku_to_add(request)
    session, new = session_for(request)
    try:
        await queries.add_to_cart(request.app[DB], session, sku_id)
    except queries.UnknownSku:
        raise ApiError(404, f"sku_id {sku_id} does not exist") from None
    except queries.OutOfStock:
        raise ApiError(422, f"sku_id: the cart already holds all of sku {sku_id}'s stock") from None
    return _with_session(web.Response(status=201, text="Created"), session, new)


async def add_interaction(request: web.Request) -> web.Response:
    event = await read_body(request, Interaction)
    try:
        session = existing_session(request)
    except ApiError:
        session = None  # only recorded alongside the event: never refuse a click for it
    # One durable INSERT per event (see README): nothing acknowledged is lost.
    await queries.add_interaction(request.app[DB], event, session)
    return web.Response(status=201, text="Created")
