"""Checks of a parent row's stored photos (`photo_elements`, kept by a row
trigger on its photos table), shared by the reviews (migration 005) and qa
(migration 011) tests: the two services keep them the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from tests.lock_waits import wait_until_blocked


async def photos_written_at_once(
    connect: Callable[[str], Awaitable[asyncpg.Connection]],
    dsn: str,
    parent: str,
    parent_id: int,
) -> str:
    """Two transactions add a photo ('a', then 'b') to one row of `parent`
    (reviews or answers) at once: the second's trigger waits for the first's
    row lock (the test waits for that wait itself), then both commit.
    Returns the row's stored photos."""
    photos, key = f"{parent}_photos", f"{parent.removesuffix('s')}_id"
    insert = f"INSERT INTO {photos} ({key}, url) VALUES ($1, $2)"
    first, second, watch = await connect(dsn), await connect(dsn), await connect(dsn)
    one = first.transaction()
    await one.start()
    await first.execute(insert, parent_id, "a")
    other = asyncio.create_task(second.execute(insert, parent_id, "b"))
    await wait_until_blocked(watch, second.get_server_pid())
    await one.commit()
    await other
    return await watch.fetchval(f"SELECT photo_elements FROM {parent} WHERE id = $1", parent_id)


async def recompute_calls(conn: asyncpg.Connection, function: str, sql: str, *args: object) -> int:
    """Runs `sql` in a transaction of its own on `conn`; the calls made in it
    to `function` (the recompute of a row's stored photos)."""
    count = "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE funcname = $1"
    async with conn.transaction():
        await conn.execute("SET LOCAL track_functions = 'pl'")
        before = await conn.fetchval(count, function)
        await conn.execute(sql, *args)
        return await conn.fetchval(count, function) - before
