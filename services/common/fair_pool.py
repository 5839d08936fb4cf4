"""FairPool: an asyncpg pool handed out first come, first served, and kept.

asyncpg's acquire is not fair (MagicStack/asyncpg#1247): a released
connection goes to whichever acquire runs next, and a waiter woken for it that
finds it gone queues again at the back. Saturated (more requests in flight
than connections, as on every cold walk), most requests wait next to nothing
and a few are passed over again and again: hundreds of ms at the p99. Here
permits of the pool's size are handed out in arrival order, so the pool
itself never has a waiter (docs/decisions/0037).

Invariants:

* Order: a permit given back goes to the longest waiter still waiting; a
  permit is free only while nobody waits (`_free > 0` implies no waiter).
* Bounded wait: with `timeout_s`, a waiter still waiting `timeout_s` after it
  arrived gets TimeoutError. One timer serves every waiter: it fires at the
  oldest one's deadline (arrival order is deadline order, the timeout being
  the same for all). asyncio.timeout per acquire cost a cold read 10% of its
  process's CPU (a timer scheduled and cancelled each time: 0039).
* No permit lost: a waiter cancelled after its permit was handed over passes
  it on; a take() that fails gives its permit back.
* Kept connections: one given back clean (open, not cancelling a query, not
  in a transaction, of the current generation) waits here for the next
  take() instead of going back through asyncpg's release and acquire, which
  cost a writer or a cold read 5-8% of its process's CPU (release runs in a
  new Task): docs/decisions/0038. Anything else goes back to asyncpg, which
  closes or resets it as it always did. Before closing or expiring the
  asyncpg pool, call release_idle() or expire().
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import asyncpg


def _open(conn: asyncpg.Connection) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # asyncpg took it back itself when it was lost
        return False


class FairPool:
    """`take()` and `give_back()` connections of an asyncpg pool, in turn."""

    __slots__ = (
        "_free",
        "_generation",
        "_held",
        "_idle",
        "_loop",
        "_sweeper",
        "_timeout",
        "_waiters",
        "pool",
    )

    def __init__(self, pool: asyncpg.Pool, timeout_s: float | None = None) -> None:
        self.pool = pool
        self._free = pool.get_max_size()  # permits nobody holds
        self._waiters: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._timeout = timeout_s
        self._sweeper: asyncio.TimerHandle | None = None
        self._idle: list[asyncpg.Connection] = []
        self._held: dict[asyncpg.Connection, int] = {}  # taken from asyncpg: its generation
        self._generation = 0
        # The loop, looked up once: on Python 3.11 asyncio.get_running_loop()
        # is a getpid() system call each time (a fork check), one per waiter
        # before this (decision 0040).
        self._loop: asyncio.AbstractEventLoop | None = None

    async def take(self) -> asyncpg.Connection:
        """A connection, in turn; hand it back with give_back(). TimeoutError
        after waiting `timeout_s` for a turn."""
        if self._free:
            self._free -= 1
        else:
            await self._wait_turn()
        try:
            while self._idle:
                conn = self._idle.pop()
                if _open(conn):
                    return conn
                # Lost while idle (a server restart): asyncpg replaces it.
                self._held.pop(conn, None)
                await self.pool.release(conn)
            # Never waits for a release (the permits are the pool's size),
            # only for a connect, which the pool's own timeout bounds.
            conn = await self.pool.acquire()
        except BaseException:
            self._pass_permit()
            raise
        self._held[conn] = self._generation
        return conn

    async def give_back(self, conn: asyncpg.Connection) -> None:
        try:
            if (
                self._held.get(conn) == self._generation
                and _open(conn)
                and not conn.is_in_transaction()
                and not conn._protocol._is_cancelling()  # a query cancelled under it
            ):
                self._idle.append(conn)
                return
            self._held.pop(conn, None)
            await self.pool.release(conn)
        finally:
            self._pass_permit()

    async def _wait_turn(self) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        timeout = self._timeout
        deadline = loop.time() + timeout if timeout is not None else float("inf")
        entry = (deadline, turn)
        self._waiters.append(entry)
        if timeout is not None and self._sweeper is None:
            self._sweeper = loop.call_at(deadline, self._sweep, loop)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.cancelled():
                with contextlib.suppress(ValueError):  # _pass_permit may have dropped it
                    self._waiters.remove(entry)
            elif turn.exception() is None:
                self._pass_permit()  # handed over as we were cancelled: pass it on
            raise

    def _pass_permit(self) -> None:
        waiters = self._waiters
        while waiters:
            _, turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the waiters past their deadline; come back at the next one's."""
        self._sweeper = None
        waiters = self._waiters
        now = loop.time()
        while waiters and waiters[0][0] <= now:
            _, turn = waiters.popleft()
            if not turn.done():
                turn.set_exception(TimeoutError())
        if waiters:
            self._sweeper = loop.call_at(waiters[0][0], self._sweep, loop)

    def idle_size(self) -> int:
        """Connections idle here or in asyncpg's pool."""
        return len(self._idle) + self.pool.get_idle_size()

    async def release_idle(self) -> None:
        """Give every connection kept here back to asyncpg (before its close())."""
        idle, self._idle = self._idle, []
        for conn in idle:
            self._held.pop(conn, None)
            await self.pool.release(conn)

    async def expire(self) -> None:
        """asyncpg's expire_connections(), for the connections kept here and
        those in use too: they go back to asyncpg, which closes them."""
        self._generation += 1
        await self.release_idle()
        await self.pool.expire_connections()
