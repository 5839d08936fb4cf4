"""The contract's error shape, `{"error": "..."}`, and the mapping of every
failure to a status: bad input is a 4xx naming the field, an unreachable
database is a 503, and nothing leaks a traceback."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import orjson
from aiohttp import web

log = logging.getLogger("runway.errors")

JSON_HEADERS = {"Content-Type": "application/json"}

# Errors that mean "the database is not there right now", not "the request is bad".
DB_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, timeout
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


class ApiError(Exception):
    """An error the client should see: status plus a message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": message}), headers=JSON_HEADERS)


_HTTP_MESSAGES = {
    404: "not found",
    405: "method not allowed",
    413: "request body is larger than the limit",
}


def error_response(request: web.Request, exc: BaseException) -> web.StreamResponse:
    """Turn any exception escaping a handler into the contract's JSON error."""
    if isinstance(exc, ApiError):
        return json_error(exc.status, exc.message)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return exc  # redirects and 204s raised as exceptions pass through
        message = _HTTP_MESSAGES.get(exc.status) or exc.reason.lower()
        if exc.status == 404:
            message = f"no route for {request.path}"
        elif isinstance(exc, web.HTTPMethodNotAllowed):
            response = json_error(405, f"method {request.method} not allowed on {request.path}")
            # RFC 9110: a 405 says which methods the path allows.
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            return response
        return json_error(exc.status, message)
    if isinstance(exc, DB_UNAVAILABLE):
        log.warning(
            "database unavailable: %r request_id=%s",
            exc,
            request.headers.get("X-Request-Id", "-"),
        )
        return json_error(503, "database unavailable, try again shortly")
    log.exception(
        "unhandled error on %s %s request_id=%s",
        request.method,
        request.path,
        request.headers.get("X-Request-Id", "-"),
        exc_info=exc,
    )
    return json_error(500, "internal error")
