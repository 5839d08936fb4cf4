"""Waiting, in a test, for the event a concurrency test arranges: a backend
blocked on a lock (polled from pg_stat_activity, with a deadline)."""

from __future__ import annotations

import asyncio
import time

import asyncpg


async def wait_until_blocked(conn: asyncpg.Connection, pid: int) -> None:
    """Until backend `pid` waits for a lock (polled, with a deadline)."""
    deadline = time.monotonic() + 10
    while not await conn.fetchval(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
    ):
        assert time.monotonic() < deadline, "the second write never waited for the first"
        await asyncio.sleep(0.01)
