"""services/common/db.py: the URL helpers (a socket directory given as
?host= must survive a change of database: a URL cut at its last slash would
lose the directory and name a database "postgresql"), and FairPool's order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.common.db import database_name, with_database
from services.common.fair_pool import FairPool, _open
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


@contextlib.asynccontextmanager
async def fair_pool(size: int, min_size: int = 1) -> AsyncIterator[tuple[asyncpg.Pool, FairPool]]:
    """An asyncpg pool as the services make it (no reset) and a FairPool on it;
    the kept connections go back to asyncpg before its close()."""
    pool = await asyncpg.create_pool(
        PG_ADMIN_URL, min_size=min_size, max_size=size, reset=_no_reset
    )
    fair = FairPool(pool)
    try:
        yield pool, fair
    finally:
        await fair.release_idle()
        await asyncio.wait_for(pool.close(), 5)


@pytest.mark.parametrize("late_by", range(8))
async def test_fair_pool_serves_acquirers_in_arrival_order(late_by: int) -> None:
    """One connection, two waiters, then a third acquirer arriving `late_by`
    loop turns after the holder starts giving it back. asyncpg's own acquire
    lets the late one take a connection another waiter was woken for (with
    late_by 1 it is served first and waiter 0 last: MagicStack/asyncpg#1247),
    which under saturation is the cold reads' p99; FairPool serves them in
    the order they asked."""
    async with fair_pool(1) as (_, fair):
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


async def test_fair_pool_times_a_waiter_out_and_loses_no_permit() -> None:
    """A turn not granted within the timeout fails with TimeoutError (one
    timer for all waiters, not asyncio.timeout per take); the permit count
    is whole again once the holder gives its connection back."""
    async with fair_pool(1) as (pool, _):
        fair = FairPool(pool, timeout_s=0.05)
        holder = await fair.take()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await fair.take()
        assert loop.time() - started >= 0.05
        await fair.give_back(holder)
        conn = await asyncio.wait_for(fair.take(), 1)  # the permit was not lost
        await fair.give_back(conn)
        await fair.release_idle()
        assert fair._free == 1 and not fair._waiters


async def test_fair_pool_passes_on_a_turn_its_waiter_no_longer_wants() -> None:
    """A waiter cancelled while waiting leaves the line; one cancelled just
    after its turn came passes the turn to the next waiter (else the pool
    would shrink by one connection for good)."""
    async with fair_pool(1) as (_, fair):
        holder = await fair.take()
        served: list[str] = []

        async def waiter(name: str) -> None:
            conn = await fair.take()
            served.append(name)
            await fair.give_back(conn)

        gone, handed, last = (asyncio.create_task(waiter(n)) for n in ("gone", "handed", "last"))
        await asyncio.sleep(0)  # one loop turn: all three wait in line
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        await fair.give_back(holder)  # the turn goes to "handed", which has not run yet
        handed.cancel()
        await asyncio.wait_for(asyncio.gather(handed, last, return_exceptions=True), 1)
        assert gone.cancelled() and handed.cancelled()
        assert served == ["last"]
        assert fair._free == 1 and not fair._waiters


# --- FairPool keeps clean connections ------------------------------------------


async def test_fair_pool_keeps_a_clean_connection_and_hands_it_out_again() -> None:
    """A connection given back clean stays with FairPool (asyncpg's pool sees
    it in use) and the next take() hands out the same one; release_idle()
    returns it, after which asyncpg's close() does not wait."""
    async with fair_pool(2) as (pool, fair):
        conn = await fair.take()
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        await fair.give_back(conn)
        assert fair.idle_size() == 1 and pool.get_idle_size() == 0
        again = await fair.take()
        assert again is conn
        assert await again.fetchval("SELECT pg_backend_pid()") == backend
        await fair.give_back(again)
        await fair.release_idle()
        assert pool.get_idle_size() == 1 and fair.idle_size() == 1


async def test_fair_pool_returns_a_connection_left_in_a_transaction_to_asyncpg() -> None:
    """A connection given back inside a transaction is not kept: asyncpg's
    release rolls it back, so the next holder never inherits the transaction."""
    async with fair_pool(1) as (pool, fair):
        conn = await fair.take()
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMP TABLE left_behind (x int)")
        await fair.give_back(conn)
        assert fair.idle_size() == pool.get_idle_size() == 1  # in asyncpg's pool, not kept
        conn = await fair.take()
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('pg_temp.left_behind')") is None
        await fair.give_back(conn)


async def test_fair_pool_replaces_a_connection_lost_while_kept() -> None:
    """A kept connection whose server process ended (a restart, a kill) is
    not handed out: take() gives a new one."""
    async with fair_pool(1) as (_, fair):
        conn = await fair.take()
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        await fair.give_back(conn)
        killer = await asyncpg.connect(PG_ADMIN_URL)
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", backend)
        finally:
            await killer.close()
        async with asyncio.timeout(5):  # the client notices the closed socket
            while _open(conn):  # noqa: ASYNC110 (asyncpg has no event for it)
                await asyncio.sleep(0.01)
        fresh = await fair.take()
        assert fresh is not conn
        assert await fresh.fetchval("SELECT pg_backend_pid()") != backend
        await fair.give_back(fresh)


async def test_fair_pool_expire_closes_kept_and_in_use_connections() -> None:
    """expire() (a replica marked down): the kept connections and, when given
    back, those in use are closed, never handed out again."""
    watcher = await asyncpg.connect(PG_ADMIN_URL)
    try:
        async with fair_pool(2, min_size=2) as (_, fair):
            kept, in_use = await fair.take(), await fair.take()
            old = {await c.fetchval("SELECT pg_backend_pid()") for c in (kept, in_use)}
            await fair.give_back(kept)
            await fair.expire()
            await fair.give_back(in_use)
            conn = await fair.take()
            assert await conn.fetchval("SELECT pg_backend_pid()") not in old
            await fair.give_back(conn)
        async with asyncio.timeout(5):  # both old server processes end
            while await watcher.fetchval(  # noqa: ASYNC110 (another server's state)
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", list(old)
            ):
                await asyncio.sleep(0.01)
    finally:
        await watcher.close()
