"""services/common/db.py: the URL helpers (a socket directory given as
?host= must survive a change of database: a URL cut at its last slash would
lose the directory and name a database "postgresql"), and FairPool's order."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.common.db import FairPool, database_name, with_database
from tests.conftest import PG_ADMIN_URL


def test_another_database_keeps_the_socket_directory() -> None:
    url = "postgresql://postgres@/atelier_qa?host=/run/postgresql"
    assert with_database(url, "postgres") == "postgresql://postgres@/postgres?host=/run/postgresql"
    assert database_name(url) == "atelier_qa"


def test_another_database_over_tcp() -> None:
    url = "postgresql://app:secret@db.internal:5433/atelier_qa"
    assert with_database(url, "postgres") == "postgresql://app:secret@db.internal:5433/postgres"
    assert database_name(url) == "atelier_qa"


# --- FairPool: connections handed out in arrival order -----------------------


async def _no_reset(conn: asyncpg.Connection) -> None:
    """As the services' pools: no reset query on release."""


@pytest.mark.parametrize("late_by", range(8))
async def test_fair_pool_serves_acquirers_in_arrival_order(late_by: int) -> None:
    """One connection, two waiters, then a third acquirer arriving `late_by`
    loop turns after the holder starts giving it back. asyncpg's own acquire
    lets the late one take a connection another waiter was woken for (with
    late_by 1 it is served first and waiter 0 last: MagicStack/asyncpg#1247),
    which under saturation is the cold reads' p99; FairPool serves them in
    the order they asked."""
    pool = await asyncpg.create_pool(PG_ADMIN_URL, min_size=1, max_size=1, reset=_no_reset)
    try:
        fair = FairPool(pool)
        asked: list[str] = []
        served: list[str] = []

        async def acquirer(name: str, late_by: int = 0) -> None:
            for _ in range(late_by):
                await asyncio.sleep(0)  # a loop turn, not a wait for time
            asked.append(name)
            conn = await fair.take()
            served.append(name)
            await conn.fetchval("SELECT 1")
            await fair.give_back(conn)

        holder = await fair.take()
        waiters = [asyncio.create_task(acquirer(name)) for name in ("0", "1")]
        await asyncio.sleep(0)  # one loop turn: both ask, and wait
        assert asked == ["0", "1"] and served == []
        giving_back = asyncio.create_task(fair.give_back(holder))
        late = asyncio.create_task(acquirer("late", late_by))
        await asyncio.gather(giving_back, late, *waiters)
        assert served == asked
    finally:
        await pool.close()
