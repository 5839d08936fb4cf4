"""The guard on ReadyResponse's use of aiohttp internals
(services/common/ready_response.py lists them). After an aiohttp upgrade these
fail naming what moved: each private attribute still exists, still means what
the public properties read, and a real request through a real server still
gets exactly the prebuilt bytes, twice on one connection."""

from __future__ import annotations

import asyncio
import inspect
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from services.common import ready_response
from services.common.app import base_app
from services.common.ready_response import (
    REQUEST_ATTRIBUTES,
    RESPONSE_ATTRIBUTES,
    ReadyResponse,
    ready_bytes,
    ready_head,
)
from tests.conftest import settings_for

HEAD = ready_head({"Content-Type": "application/json", "X-Cache": "local"})
BODY = b'{"ok":' + b"1" * 3000 + b"}"


def _gone(owner: str, name: str) -> str:
    return (
        f"aiohttp {aiohttp.__version__}: {owner}.{name} is gone or renamed; "
        f"services/common/ready_response.py relies on it (see its comment block)"
    )


@pytest.mark.parametrize("name", RESPONSE_ATTRIBUTES)
def test_stream_response_still_has(name: str) -> None:
    assert hasattr(web.StreamResponse(), name), _gone("StreamResponse", name)


def test_public_properties_still_read_the_private_attributes() -> None:
    response = web.StreamResponse()
    response._keep_alive = True
    assert response.keep_alive is True, "StreamResponse.keep_alive no longer reads _keep_alive"
    response._body_length = 1234
    assert response.body_length == 1234, "StreamResponse.body_length no longer reads _body_length"
    assert not response.prepared
    response._eof_sent = True
    assert response.prepared, "StreamResponse.prepared no longer reads _eof_sent"
    response = web.StreamResponse()
    response._payload_writer = object()
    assert response.prepared, "StreamResponse.prepared no longer reads _payload_writer"


def test_the_overridden_methods_keep_their_signatures() -> None:
    """ReadyResponse replaces prepare() and write_eof(): aiohttp must still call
    them the way it did."""
    for name in ("prepare", "write_eof"):
        theirs = inspect.signature(getattr(web.StreamResponse, name))
        ours = inspect.signature(getattr(ReadyResponse, name))
        assert list(theirs.parameters) == list(ours.parameters), (
            f"aiohttp {aiohttp.__version__}: StreamResponse.{name}{theirs} changed; "
            f"ReadyResponse.{name}{ours} overrides it"
        )


def test_services_register_no_response_prepare_hook() -> None:
    """ReadyResponse skips on_response_prepare: a service app must have none."""
    app, _ = base_app(
        settings_for("reviews", "postgresql://unused/x", "redis://unused"), cache_namespace="t"
    )
    assert not app.on_response_prepare


def test_date_and_server_are_aiohttps_own() -> None:
    from aiohttp.helpers import rfc822_formatted_time
    from aiohttp.http import SERVER_SOFTWARE

    before = rfc822_formatted_time()
    answer = ready_bytes(HEAD, BODY)
    after = rfc822_formatted_time()  # the second may tick in between
    assert any(f"\r\nDate: {d}\r\n".encode() in answer for d in (before, after))
    assert f"\r\nServer: {SERVER_SOFTWARE}\r\n\r\n".encode() in answer
    assert answer.startswith(HEAD + b"%d\r\n" % len(BODY))
    assert answer.endswith(b"\r\n\r\n" + BODY)


@pytest.fixture
async def server(aiohttp_server):
    seen: list[tuple[web.Request, ReadyResponse, bytes]] = []

    async def view(request: web.Request) -> web.StreamResponse:
        for name in REQUEST_ATTRIBUTES:
            assert hasattr(request, name), _gone("BaseRequest", name)
        assert isinstance(request._payload_writer, AbstractStreamWriter), (
            f"aiohttp {aiohttp.__version__}: BaseRequest._payload_writer is no longer "
            "the connection's writer"
        )
        ready = ready_bytes(HEAD, BODY)
        response = ReadyResponse(ready)
        seen.append((request, response, ready))
        return response

    app = web.Application()
    app.router.add_route("GET", "/x", view)
    srv = await aiohttp_server(app)
    srv.seen = seen
    return srv


async def test_a_real_request_gets_exactly_the_prebuilt_bytes(server) -> None:
    """Two requests pipelined on one connection: each answer on the wire is the
    buffer byte for byte, and the connection stays open for the second."""
    get = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(get + get)
        await writer.drain()
        received = b""
        while len(server.seen) < 2 or len(received) < sum(len(r) for *_, r in server.seen):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, "the server closed the connection: keep-alive (_keep_alive) not honoured"
            received += chunk
    finally:
        writer.close()
    (_, first, first_ready), (_, second, second_ready) = server.seen
    assert received == first_ready + second_ready
    for response, ready in ((first, first_ready), (second, second_ready)):
        assert response.prepared, "prepared is False after the answer went out (_eof_sent)"
        assert response.keep_alive is True
        assert response.body_length == len(ready), (
            "body_length is not the bytes written (_body_length / writer.output_size)"
        )
        assert response._payload_writer is None and response._req is None


async def test_an_aiohttp_client_reads_it(server, aiohttp_client) -> None:
    client = await aiohttp_client(server)
    for _ in range(2):
        resp = await client.get("/x")
        assert resp.status == 200
        assert resp.headers["X-Cache"] == "local"
        assert resp.headers["Content-Length"] == str(len(BODY))
        assert await resp.read() == BODY


def test_no_other_common_module_touches_those_internals() -> None:
    common = Path(ready_response.__file__).parent
    names = (*RESPONSE_ATTRIBUTES, "_prepare_hook", "rfc822_formatted_time", "SERVER_SOFTWARE")
    alternatives = "|".join(names)
    pattern = re.compile(rf"\.({alternatives})\b|import .*\b({alternatives})\b")
    for path in sorted(common.glob("*.py")):
        if path.name != "ready_response.py":
            found = pattern.search(path.read_text())
            assert found is None, (
                f"{path.name}: {found[0]!r}; keep aiohttp internals in ready_response.py"
            )
