"""Ceilings for the benchmark: the least an aiohttp process can do per request.

    python -m bench.ceiling --port 8090 [--query DSN [--route NAME]] [--reuse-port]
                            [--unfair-pool] [--body-bytes N]

Without --query, every request answers fixed bytes (the ceiling for cache
hits). With --query, every request runs one indexed asyncpg query first (the
ceiling for cold reads). With --query and --route (a bench.cold_ab route), every
request runs that route's own statement and shaping instead (the service's
queries.py function, on a bare connection): the route without the service
around it (cache, middleware, metrics, validation, the Database wrapper).
With --body-bytes, the fixed answer (without --route) is padded to N bytes: the
ceiling at a route's body size (bench.cold_ab --ceiling-bodies). With --query
and --body-bytes on a service's port behind the gateway, it stands in for a
service whose every read is a whole-page document: a probe of the path's id
and ready bytes (the upper bound measured in docs/decisions/0062).
With --reuse-port, several processes share the port (the benchmark starts one
per core, as many as it gives the services).

The query's connection is taken as the services take theirs
(services/common/db.py, FairPool: first come, first served); --unfair-pool
takes it straight from asyncpg's pool instead, whose waiters can be passed
over (MagicStack/asyncpg#1247; docs/decisions/0037-fair-pool-acquire.md)."""

from __future__ import annotations

import argparse
import importlib
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import uvloop
from aiohttp import web

from services.common.db import PLAN_CACHE_MODE
from services.common.fair_pool import FairPool

BODY = b'{"product":"1","page":0,"count":5,"results":[]}'
BODY_KEY: web.AppKey[bytes] = web.AppKey("body", bytes)
# (take, give back): FairPool's, as the services take connections, or asyncpg's own.
POOL: web.AppKey[tuple[Callable, Callable]] = web.AppKey("pool", tuple)
LOAD: web.AppKey[Callable[[int], Awaitable[bytes | None]]] = web.AppKey("load")

# bench.cold_ab's routes: (service, its queries.py function, the arguments
# after the db and the id, as the route's path in cold_ab asks).
ROUTE_LOADS: dict[str, tuple[str, str, tuple]] = {
    "list1000": ("reviews", "review_page", ("relevant", 1, 1000)),
    "list30": ("reviews", "review_page", ("newest", 1, 30)),
    "list5": ("reviews", "review_page", ("helpful", 1, 5)),
    "meta": ("reviews", "review_meta", ()),
    "questions": ("qa", "questions_page", (1, 5)),
    "answers": ("qa", "answers_page", (1, 5)),
    "product": ("overview", "product_detail", ()),
    "styles": ("overview", "product_styles", ()),
    "related": ("overview", "product_related", ()),
}
_FIRST_NUMBER = re.compile(r"\d+")  # the id: first in each of cold_ab's paths


class BareDatabase:
    """The read calls queries.py makes, each one statement on a connection
    taken and given back, as Database does without replicas."""

    def __init__(self, take: Callable, give_back: Callable) -> None:
        self._take, self._give_back = take, give_back

    async def _run(self, method: str, sql: str, args: tuple) -> Any:
        conn = await self._take()
        try:
            return await getattr(conn, method)(sql, *args)
        finally:
            await self._give_back(conn)

    async def read_fetchval(self, sql: str, *args: Any) -> Any:
        return await self._run("fetchval", sql, args)

    async def read_fetch(self, sql: str, *args: Any) -> Any:
        return await self._run("fetch", sql, args)

    async def read_fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._run("fetchrow", sql, args)

    read_fetch_found = read_fetch


def body_of(size: int | None) -> bytes:
    """BODY, or a JSON object that starts as BODY does, padded with a string
    field to `size` bytes (exactly, from len(BODY) + 10 up)."""
    if size is None or size <= len(BODY):
        return BODY
    head = BODY[:-1] + b',"pad":"'
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def route_load(name: str, db: BareDatabase) -> Callable[[int], Awaitable[bytes | None]]:
    """The route's queries.py function on `db`, given the id."""
    service, function, extra = ROUTE_LOADS[name]
    load = getattr(importlib.import_module(f"services.{service}.queries"), function)
    return lambda key: load(db, key, *extra)


async def fixed(request: web.Request) -> web.Response:
    return web.Response(body=request.app[BODY_KEY], headers={"Content-Type": "application/json"})


def probe_key(path_qs: str) -> int:
    """The key one_query probes: the first number in the path and query
    (ceiling-query's `/query?id=N`; a route's id when the ceiling stands in
    for a service behind the gateway), else 1."""
    match = _FIRST_NUMBER.search(path_qs)
    return int(match[0]) if match else 1


async def one_query(request: web.Request) -> web.Response:
    key = probe_key(request.path_qs)
    take, give_back = request.app[POOL]
    conn = await take()
    try:
        await conn.fetchval("SELECT id FROM reviews WHERE id = $1", key)
    finally:
        await give_back(conn)
    return web.Response(body=request.app[BODY_KEY], headers={"Content-Type": "application/json"})


async def no_metrics(request: web.Request) -> web.Response:
    return web.Response(body=b"", content_type="text/plain")


async def route_statement(request: web.Request) -> web.Response:
    try:
        body = await request.app[LOAD](probe_key(request.path_qs))
    except LookupError:  # overview's UnknownProduct
        body = None
    if body is None:
        return web.Response(status=404, body=b'{"error":"not found"}')
    return web.Response(body=body, headers={"Content-Type": "application/json"})


def create_app(
    dsn: str | None, fair: bool = True, route: str | None = None, body_bytes: int | None = None
) -> web.Application:
    app = web.Application()
    app[BODY_KEY] = body_of(body_bytes)
    if dsn is None:
        app.router.add_get("/{tail:.*}", fixed)
        return app

    async def pool_ctx(app: web.Application):
        async def no_reset(conn: asyncpg.Connection) -> None:
            return None

        size = int(os.environ.get("DB_POOL_MAX", "10"))  # as the services' pools
        pool = await asyncpg.create_pool(
            dsn,
            min_size=size,
            max_size=size,
            reset=no_reset,
            # a route's statement planned as the services plan it (db.py)
            server_settings={"plan_cache_mode": PLAN_CACHE_MODE} if route else None,
        )
        if fair:
            fair_pool = FairPool(pool)
            app[POOL] = (fair_pool.take, fair_pool.give_back)
        else:
            app[POOL] = (pool.acquire, pool.release)
        if route is not None:
            app[LOAD] = route_load(route, BareDatabase(*app[POOL]))
        yield
        if fair:
            await fair_pool.release_idle()
        await pool.close()

    app.cleanup_ctx.append(pool_ctx)
    # An empty exposition: bench.run --base-url scrapes every service port,
    # also when a ceiling stands in for a service there (docs/decisions/0062).
    app.router.add_get("/metrics", no_metrics)
    app.router.add_get("/{tail:.*}", one_query if route is None else route_statement)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--query", metavar="DSN")
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--unfair-pool", action="store_true")
    parser.add_argument("--route", choices=sorted(ROUTE_LOADS))
    parser.add_argument("--body-bytes", type=int, metavar="N")
    args = parser.parse_args()
    web.run_app(
        create_app(
            args.query, fair=not args.unfair_pool, route=args.route, body_bytes=args.body_bytes
        ),
        host="127.0.0.1",
        port=args.port,
        reuse_port=args.reuse_port or None,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
