"""cached_json's two ways to answer: ReadyResponse (one prebuilt buffer) for a
GET on a persistent HTTP/1.1 connection, web.Response otherwise. They must put
the same bytes on the wire but for what only the slow path adds (Connection),
so a client cannot tell which path answered."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from services.common.cache import ResponseCache
from services.common.metrics import Metrics
from services.common.ready_response import ReadyResponse
from services.common.resources import CACHE
from services.common.responses import cached_json, written

BODY = b'{"product_id":"7","results":[' + b'{"x":1},' * 400 + b'{"x":2}]}'
MARKER = "1764950400123.16b3f2a8"


@pytest.fixture
async def server(aiohttp_server):
    app = web.Application()
    app[CACHE] = ResponseCache(None, "t", Metrics("test"))  # no Redis: every read loads
    seen: list[type] = []

    async def view(request: web.Request) -> web.StreamResponse:
        response = await cached_json(request, "p:7", "k", lambda: asyncio.sleep(0, BODY))
        seen.append(type(response))
        return response

    app.router.add_route("GET", "/x", view)

    async def write_view(request: web.Request) -> web.StreamResponse:
        response = written(request, int(request.match_info["status"]), MARKER)
        seen.append((type(response), response.status))
        return response

    app.router.add_route("POST", "/w/{status}", write_view)
    srv = await aiohttp_server(app)
    srv.seen = seen
    return srv


async def exchange(port: int, *requests: bytes) -> list[tuple[list[bytes], bytes]]:
    """Send the requests on one connection (pipelined) and read each answer:
    its head's lines and its body, framed by Content-Length."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(requests))
        answers = []
        for _ in requests:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].split(b"\r\n")
            length = next(
                (int(x.split(b":")[1]) for x in lines if x.startswith(b"Content-Length")), 0
            )
            answers.append((lines, await reader.readexactly(length)))
        return answers
    finally:
        writer.close()


def without_date(lines: list[bytes]) -> list[bytes]:
    return [x for x in lines if not x.startswith(b"Date: ")]


async def test_ready_and_regular_paths_write_the_same_answer(server):
    get = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    close = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    # Two on one connection: the fast path keeps it usable for the next request.
    (fast_head, fast_body), (again_head, _), (slow_head, slow_body) = await exchange(
        server.port, get, get, close
    )
    assert server.seen == [ReadyResponse, ReadyResponse, web.Response]
    assert fast_body == slow_body == BODY
    assert without_date(slow_head) == [*without_date(fast_head), b"Connection: close"]
    assert without_date(fast_head) == without_date(again_head)
    assert fast_head[0] == b"HTTP/1.1 200 OK"
    assert any(x.startswith(b"Date: ") and x.endswith(b" GMT") for x in fast_head)


async def test_http_1_0_takes_the_regular_path(server):
    keep_alive = b"GET /x HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
    [(head, body)] = await exchange(server.port, keep_alive)
    assert server.seen == [web.Response]
    assert head[0] == b"HTTP/1.0 200 OK"
    assert b"Connection: keep-alive" in head
    assert body == BODY


async def test_an_aiohttp_client_reads_the_fast_path(server, aiohttp_client):
    client = await aiohttp_client(server)
    for _ in range(3):  # over one pooled connection
        resp = await client.get("/x")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["X-Cache"] == "db"
        assert await resp.read() == BODY
    assert server.seen == [ReadyResponse] * 3


@pytest.mark.parametrize("status", [201, 204])
async def test_a_write_s_ready_and_regular_answers_are_the_same(server, status):
    """A write's 201 "Created" or 204 with the session's marker: prebuilt on a
    persistent HTTP/1.1 connection, web.Response with write_marker.mark()
    otherwise; the same bytes but for the slow path's Connection header, and
    the status the metrics record is the answer's."""
    post = b"POST /w/%d HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n" % status
    close = b"POST /w/%d HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (
        status
    )
    (fast_head, fast_body), (again_head, _), (slow_head, slow_body) = await exchange(
        server.port, post, post, close
    )
    assert server.seen == [(ReadyResponse, status)] * 2 + [(web.Response, status)]
    assert without_date(slow_head) == [*without_date(fast_head), b"Connection: close"]
    assert without_date(fast_head) == without_date(again_head)
    assert fast_body == slow_body == (b"Created" if status == 201 else b"")
    status_line = b"HTTP/1.1 201 Created" if status == 201 else b"HTTP/1.1 204 No Content"
    assert fast_head[0] == status_line
    cookie = f"Set-Cookie: runway_w={MARKER}; HttpOnly; Max-Age=1; Path=/; SameSite=Lax"
    assert cookie.encode() in fast_head
    assert f"X-Runway-Write: {MARKER}".encode() in fast_head


async def test_an_aiohttp_client_reads_a_ready_write_answer(server, aiohttp_client):
    client = await aiohttp_client(server)
    for status in (201, 204, 201):  # over one pooled connection
        resp = await client.post(f"/w/{status}")
        assert resp.status == status
        assert resp.headers["X-Runway-Write"] == MARKER
        assert resp.cookies["runway_w"].value == MARKER
        assert resp.cookies["runway_w"]["httponly"]
        assert await resp.read() == (b"Created" if status == 201 else b"")
    assert [kind for kind, _ in server.seen] == [ReadyResponse] * 3
