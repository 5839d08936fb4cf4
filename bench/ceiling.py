"""Ceilings for the benchmark: the least an aiohttp process can do per request.

    python -m bench.ceiling --port 8090 [--query DSN] [--reuse-port] [--unfair-pool]

Without --query, every request answers fixed bytes (the ceiling for cache
hits). With --query, every request runs one indexed asyncpg query first (the
ceiling for cold reads). With --reuse-port, several processes share the port
(the benchmark starts one per core, as many as it gives the services).

The query's connection is taken as the services take theirs
(services/common/db.py, FairPool: first come, first served); --unfair-pool
takes it straight from asyncpg's pool instead, whose waiters can be passed
over (MagicStack/asyncpg#1247; docs/decisions/0037-fair-pool-acquire.md)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import asyncpg
import uvloop
from aiohttp import web

from services.common.fair_pool import FairPool

BODY = b'{"product":"1","page":0,"count":5,"results":[]}'
# (take, give back): FairPool's, as the services take connections, or asyncpg's own.
POOL: web.AppKey[tuple[Callable, Callable]] = web.AppKey("pool", tuple)


async def fixed(request: web.Request) -> web.Response:
    return web.Response(body=BODY, headers={"Content-Type": "application/json"})


async def one_query(request: web.Request) -> web.Response:
    key = int(request.query.get("id", "1"))
    take, give_back = request.app[POOL]
    conn = await take()
    try:
        await conn.fetchval("SELECT id FROM reviews WHERE id = $1", key)
    finally:
        await give_back(conn)
    return web.Response(body=BODY, headers={"Content-Type": "application/json"})


def create_app(dsn: str | None, fair: bool = True) -> web.Application:
    app = web.Application()
    if dsn is None:
        app.router.add_get("/{tail:.*}", fixed)
        return app

    async def pool_ctx(app: web.Application):
        async def no_reset(conn: asyncpg.Connection) -> None:
            return None

        size = int(os.environ.get("DB_POOL_MAX", "10"))  # as the services' pools
        pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size, reset=no_reset)
        if fair:
            fair_pool = FairPool(pool)
            app[POOL] = (fair_pool.take, fair_pool.give_back)
        else:
            app[POOL] = (pool.acquire, pool.release)
        yield
        if fair:
            await fair_pool.release_idle()
        await pool.close()

    app.cleanup_ctx.append(pool_ctx)
    app.router.add_get("/{tail:.*}", one_query)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--query", metavar="DSN")
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--unfair-pool", action="store_true")
    args = parser.parse_args()
    web.run_app(
        create_app(args.query, fair=not args.unfair_pool),
        host="127.0.0.1",
        port=args.port,
        reuse_port=args.reuse_port or None,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
