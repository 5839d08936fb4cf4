"""Parsing of path and query values (400 on anything malformed) and decoding of
JSON bodies against msgspec types (422 naming the field on anything invalid)."""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec
from aiohttp import web

from .errors import ApiError

MAX_ID = 2**31 - 1
MAX_COUNT = 1000
DEFAULT_COUNT = 5
# page * count must stay far inside bigint; no front end pages this far.
MAX_PAGE = 10_000_000

_DIGITS = re.compile(r"[0-9]{1,10}")

T = TypeVar("T")


def parse_id(raw: str | None, field: str) -> int:
    """A path or query id: a positive integer up to 2^31-1, else 400."""
    if raw is None or raw == "":
        raise ApiError(400, f"{field} is required")
    if _DIGITS.fullmatch(raw) is None or not 0 < int(raw) <= MAX_ID:
        raise ApiError(400, f"{field} must be a positive integer up to {MAX_ID}")
    return int(raw)


def _parse_bounded(raw: str | None, field: str, default: int, upper: int) -> int:
    if raw is None or raw == "":
        return default
    if _DIGITS.fullmatch(raw) is None or not 0 < int(raw) <= upper:
        raise ApiError(400, f"{field} must be an integer from 1 to {upper}")
    return int(raw)


def parse_paging(query: Any) -> tuple[int, int]:
    """(page, count) from a query mapping: page 1-based (default 1), count 1..1000 (default 5)."""
    page = _parse_bounded(query.get("page"), "page", 1, MAX_PAGE)
    count = _parse_bounded(query.get("count"), "count", DEFAULT_COUNT, MAX_COUNT)
    return page, count


# --- bodies -----------------------------------------------------------------

_NO_NUL = r"^[^\x00]*$"  # Postgres text cannot hold NUL; reject it as input, not as a 500.


def Text(min_length: int, max_length: int) -> Any:
    return Annotated[
        str, msgspec.Meta(min_length=min_length, max_length=max_length, pattern=_NO_NUL)
    ]


# Plausible address: one @, something on each side, a dot in the domain, no spaces.
Email = Annotated[
    str,
    msgspec.Meta(max_length=60, pattern=r"^[^@\s\x00]+@[^@\s.\x00]+(\.[^@\s.\x00]+)+$"),
]
PhotoUrl = Annotated[
    str, msgspec.Meta(max_length=2048, pattern=r"^https?://[^\s\x00/?#]+[^\s\x00]*$")
]
PhotoUrls = Annotated[list[PhotoUrl], msgspec.Meta(max_length=5)]
BodyId = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]


def _field_message(err: msgspec.ValidationError) -> str:
    """msgspec says 'Expected `int` >= 1 - at `$.rating`'; lead with the field name."""
    text = str(err)
    head, sep, path = text.rpartition(" - at `$")
    if sep:
        field = path.rstrip("`").lstrip(".")
        return f"{field}: {head}"
    return f"body: {text}"


async def read_body(request: web.Request, schema: type[T]) -> T:
    """Decode and validate a JSON body. Invalid JSON is a 400, an invalid value a 422."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(422, "body: a JSON object is required")
    try:
        return msgspec.json.decode(raw, type=schema)
    except msgspec.ValidationError as err:
        raise ApiError(422, _field_message(err)) from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # invalid UTF-8 inside a string
        raise ApiError(400, "body: malformed JSON") from None
