"""The questions read model's relay: rebuilds the questions an answer's write
marked pending (migrations/012_pending_questions.sql), after the write's
commit, in batches.

Invariants:

* Correctness never waits on the relay: a product with a pending question is
  read from the tables (queries.questions_page), so the relay's lag costs
  speed (those reads skip the read model), never a stale page.
* Every process of the service runs one relay; their batches never overlap
  (the SQL claims with SKIP LOCKED). A process wakes its relay after each of
  its own answer writes, so a batch holds what was marked while the previous
  one ran; the relay also looks every POLL_S for rows it was not told of
  (another process's, a write made outside the service).
* One batch is one transaction: when it fails (Postgres away, a deadlock with
  a write made outside the service), its claimed rows come back and wait for
  the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.common.db import Database
from services.common.resources import DB

log = logging.getLogger("runway.qa.read_model_relay")

BATCH = 500  # questions a transaction: ~40 ms of rebuilds, well inside statement_timeout
POLL_S = 1.0

REBUILD_SQL = "SELECT qa_rebuild_pending_questions($1)"


class QuestionsRelay:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._wake = asyncio.Event()
        self._round_waiters: list[asyncio.Future[None]] = []

    def wake(self) -> None:
        """An answer write of this process committed: rebuild soon."""
        self._wake.set()

    async def rebuild_once(self) -> int:
        """One batch; returns how many questions it claimed."""
        return await self._db.write_fetchval(REBUILD_SQL, BATCH)

    async def drain(self) -> None:
        """Rebuild until no row is left that another relay or an open write
        does not hold."""
        while await self.rebuild_once() == BATCH:
            pass

    def next_round(self) -> asyncio.Future[None]:
        """A future set when the relay's next round ends (drained or failed)."""
        waiter = asyncio.get_running_loop().create_future()
        self._round_waiters.append(waiter)
        return waiter

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(POLL_S):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the claimed rows wait for the next round
                log.warning("questions read model relay: %r", exc)
            waiters, self._round_waiters = self._round_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


RELAY: web.AppKey[QuestionsRelay] = web.AppKey("questions_relay", QuestionsRelay)


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    """The relay under RELAY, running; after the database's context, so
    stopped before it."""
    relay = QuestionsRelay(app[DB])
    app[RELAY] = relay
    task = asyncio.create_task(relay.run(), name="questions-relay")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
