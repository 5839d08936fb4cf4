"""The responses views return: `json_response` for bytes already built,
`cached_json` for a read through the service's cache, `written` for a write's
201 or 204 with the session's marker (each a prebuilt ReadyResponse where
the regular path would write the same bytes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from . import tracing, write_marker
from .errors import JSON_HEADERS
from .ready_response import ReadyResponse, ready_bytes, ready_empty, ready_head
from .resources import CACHE


def json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers=JSON_HEADERS)


# Prebuilt per source: X-Cache tells the gateway's access log where a body came from.
_CACHED_HEADERS = {
    source: {**JSON_HEADERS, "X-Cache": source} for source in ("local", "redis", "db", "shared")
}
# The same answers' heads as web.Response writes them (tests/common/test_app.py
# compares the two).
_READY_HEADS = {source: ready_head(headers) for source, headers in _CACHED_HEADERS.items()}


async def cached_json(
    request: web.Request, scope: str, key: str, load: Callable[[], Awaitable[bytes]]
) -> web.StreamResponse:
    """A 200 JSON response read through the service's cache. An exception
    `load` raises comes out of here, and nothing is cached for it."""
    if hdrs.COOKIE in request.headers:  # maybe the session's own write (write_marker.py)
        position = write_marker.fresh_position(request)
        if position is not None:
            body, source = await request.app[CACHE].lookup_after_write(scope, key, load, position)
            return web.Response(body=body, headers=_CACHED_HEADERS[source])
    if tracing.TRACER is None:
        body, source = await request.app[CACHE].lookup(scope, key, load)
    else:  # a span naming the tier that answered (otel.py)
        body, source = await tracing.LOOKUP(request.app[CACHE], scope, key, load)
    if request.version == HttpVersion11 and request.keep_alive and request.method == "GET":
        return ReadyResponse(ready_bytes(_READY_HEADS[source], body))
    return web.Response(body=body, headers=_CACHED_HEADERS[source])


# A write's answers as web.Response(status=201, text="Created") and
# web.Response(status=204) write them with the marker's two headers
# (write_marker.mark), up to the marker (tests/common/test_app.py compares).
_CREATED_HEAD = b"HTTP/1.1 201 Created\r\nContent-Type: text/plain; charset=utf-8\r\n"
_NO_CONTENT_HEAD = b"HTTP/1.1 204 No Content\r\n"


def written(request: web.Request, status: int, marker: str) -> web.StreamResponse:
    """A write's answer: 201 "Created" or 204, carrying the session's marker
    (write_marker.py). Prebuilt on a persistent HTTP/1.1 connection: built
    by web.Response and http.cookies it cost a writer ~4% of its CPU."""
    if request.version == HttpVersion11 and request.keep_alive:
        marker_lines = write_marker.header_lines(marker)
        if status == 201:
            head = b"%s%sContent-Length: " % (_CREATED_HEAD, marker_lines)
            return ReadyResponse(ready_bytes(head, b"Created"), 201)
        return ReadyResponse(ready_empty(_NO_CONTENT_HEAD + marker_lines), status)
    if status == 201:
        return write_marker.mark(web.Response(status=201, text="Created"), marker)
    return write_marker.mark(web.Response(status=status), marker)
