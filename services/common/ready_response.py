"""ReadyResponse: a 200 whose status line, headers and body are one prebuilt
buffer, handed to aiohttp's writer as it is. This is the one module that
reaches into aiohttp's internals; responses.py decides when to use it.

web.Response builds a header multidict, fills in the defaults and serialises
them on every request: about a sixth of a cached read's CPU in the service
(docs/decisions/0018-cached-read-as-one-prebuilt-buffer.md). ReadyResponse skips
all of it by standing in for StreamResponse's own prepare() and write_eof().

aiohttp internals relied on (aiohttp is pinned in pyproject.toml for them;
tests/common/test_ready_response.py fails, naming the attribute, when an
upgrade removes or renames one, and checks the bytes on a real connection):

  BaseRequest._payload_writer   the connection's writer for this request's
                                answer; prepare() takes it as StreamResponse._start does.
  StreamResponse._payload_writer  set: the response is prepared (`prepared`)
                                and write_eof() knows where to write; cleared
                                once the answer is out, as aiohttp does.
  StreamResponse._eof_sent      set once the answer is out: a second prepare()
                                or write_eof() is a no-op (`prepared` reads it too).
  StreamResponse._req           the request while the answer is being written
                                (`task` reads it); cleared after write_eof().
  StreamResponse._keep_alive    True: the protocol keeps the connection open
                                afterwards (it reads `keep_alive`, which returns this).
  StreamResponse._body_length   bytes written, for `body_length` (the access log's %b).

Also relied on, public modules but undocumented behaviour:

  aiohttp.helpers.rfc822_formatted_time()  the Date value aiohttp writes; it
      returns the same str object all second long, so its bytes are cached by identity.
  aiohttp.http.SERVER_SOFTWARE  the Server value aiohttp writes.
  web.Response's head layout    status line, the response's own headers in
      insertion order, then Content-Length, Date, Server
      (tests/common/test_app.py compares both paths byte for byte).

What ReadyResponse leaves out, so it is only for a request the regular path
would answer with exactly these headers: a request on a persistent HTTP/1.1
connection (no Connection header then), not a HEAD (its answer has no
body), in an app without on_response_prepare handlers (their hook,
request._prepare_hook, is skipped). responses.py uses it for cached GETs and
for the writes' 201 and 204."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE

# What the guard test checks, one name per line of the list above.
RESPONSE_ATTRIBUTES = ("_payload_writer", "_eof_sent", "_req", "_keep_alive", "_body_length")
REQUEST_ATTRIBUTES = ("_payload_writer",)


class ReadyResponse(web.StreamResponse):
    """An answer written as `ready`, its whole bytes (see ready_bytes and
    ready_empty); `status` is what its head says (for the metrics and logs)."""

    __slots__ = ("_ready",)

    def __init__(self, ready: bytes, status: int = 200) -> None:
        super().__init__(status=status)
        self._ready = ready

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._payload_writer is None and not self._eof_sent:
            self._req = request
            self._payload_writer = request._payload_writer
            self._keep_alive = True
        return self._payload_writer

    async def write_eof(self, data: bytes = b"") -> None:
        writer = self._payload_writer
        if self._eof_sent or writer is None:
            return
        await writer.write_eof(self._ready)
        self._eof_sent = True
        self._req = None
        self._body_length = writer.output_size
        self._payload_writer = None


def ready_head(headers: Mapping[str, str]) -> bytes:
    """A 200's head as web.Response writes it with these headers, up to its
    Content-Length value: the status line, `headers` in their order, then
    "Content-Length: " (ready_bytes adds the rest)."""
    return (
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items())
        + b"Content-Length: "
    )


_SERVER = SERVER_SOFTWARE.encode()
_date = ["", b""]  # aiohttp's Date string of this second, and its bytes


def _date_bytes() -> bytes:
    date = rfc822_formatted_time()  # the same object all second long
    if date is not _date[0]:
        _date[:] = date, date.encode()
    return _date[1]


def ready_bytes(head: bytes, body: bytes) -> bytes:
    """The whole answer: `head` (from ready_head, or any head up to its
    Content-Length value), the body's length, Date, Server, then the body."""
    return b"%s%d\r\nDate: %s\r\nServer: %s\r\n\r\n%s" % (
        head,
        len(body),
        _date_bytes(),
        _SERVER,
        body,
    )


def ready_empty(head: bytes) -> bytes:
    """A bodiless answer (a 204: no Content-Length either): `head` (its status
    line and headers, each line ending in CRLF), then Date and Server."""
    return b"%sDate: %s\r\nServer: %s\r\n\r\n" % (head, _date_bytes(), _SERVER)
