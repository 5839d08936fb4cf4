"""The transactional outbox of cache invalidations: a committed write's cache
scopes are invalidated even when its writer dies, or loses Redis for good,
between its commit and its invalidation.

Invariants:

* A committed write has its outbox row: every write statement inserts the
  scopes it changes into `cache_outbox` itself (the services' queries.py), so
  the row commits with the write or not at all.
* A row is deleted only once an invalidation of its scopes, started after the
  row committed, was taken by Redis: by its writer (`invalidate()`, then the
  row's id is deleted in the next batch) or by the relay, which deletes the
  rows it claimed in the transaction that claimed them, after their
  invalidation went through. When Redis refuses, that transaction rolls back
  and the rows wait for the next round.
* Hence a write committed at t is invalidated in Redis by about
  t + RELAY_AGE_S + RELAY_INTERVAL_S, whoever dies, while any one process of
  the service reaches Postgres and Redis; other processes' local tiers follow
  within the lease (cache/lease.py LEASE_S). A relay may repeat an
  invalidation its writer made (say the writer died before its delete):
  invalidations are idempotent, a repeat costs one miss per process.
* Two relays never claim the same row (FOR UPDATE SKIP LOCKED), and the relay
  takes only rows older than RELAY_AGE_S, which their live writers have
  acknowledged by then: in normal operation nothing is invalidated twice.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from .cache import ResponseCache
from .db import Database
from .metrics import Metrics

log = logging.getLogger("runway.outbox")

RELAY_AGE_S = 1.0  # younger rows are their writers' to acknowledge
RELAY_INTERVAL_S = 0.5
RELAY_BATCH = 500

CLAIM_SQL = """
SELECT id, scopes FROM cache_outbox
WHERE written_at < now() - make_interval(secs => $1)
ORDER BY id
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
DELETE_SQL = "DELETE FROM cache_outbox WHERE id = ANY($1::bigint[])"


class RedisRefused(Exception):
    """The relay's invalidation was not taken: roll its claim back."""


class Outbox:
    """A service process's side of the outbox: the writers' invalidation and
    acknowledgement, and the relay (run())."""

    def __init__(self, db: Database, cache: ResponseCache, metrics: Metrics) -> None:
        self._db = db
        self._cache = cache
        self._metrics = metrics
        self._acknowledged: list[int] = []
        self._relayed_waiters: list[asyncio.Future[int]] = []

    async def invalidate(self, outbox_id: int | None, *scopes: str) -> str:
        """After a write committed with outbox row `outbox_id` (None: the write
        changed nothing and wrote no row): invalidate its scopes (the cache's
        invalidate()), and once Redis took it, acknowledge the row. Returns the
        writer's session marker."""
        marker, taken = await self._cache.invalidate_and_confirm(*scopes)
        if taken and outbox_id is not None:
            self._acknowledged.append(outbox_id)
        return marker

    async def delete_acknowledged(self) -> None:
        """Delete the rows acknowledged so far, in one statement. On failure
        they are dropped here: the relay repeats their invalidation later,
        which is harmless."""
        ids, self._acknowledged = self._acknowledged, []
        if ids:
            await self._db.fetchval(DELETE_SQL, ids)

    async def relay_once(self, age_s: float = RELAY_AGE_S) -> int:
        """Claim up to RELAY_BATCH rows older than `age_s`, invalidate their
        scopes and delete them, in one transaction. Returns how many rows;
        raises RedisRefused (nothing deleted) when Redis did not take it."""
        async with self._db.connection() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_SQL, age_s, RELAY_BATCH)
            if not rows:
                return 0
            scopes = sorted({scope for row in rows for scope in row[1]})
            _, taken = await self._cache.invalidate_and_confirm(*scopes)
            if not taken:
                raise RedisRefused(f"{len(rows)} outbox rows wait for Redis")
            await conn.execute(DELETE_SQL, [row[0] for row in rows])
        self._metrics.cache_outbox_relayed.inc(len(rows))
        log.warning("relayed %d invalidations their writers did not confirm", len(rows))
        for waiter in self._relayed_waiters:
            if not waiter.done():
                waiter.set_result(len(rows))
        self._relayed_waiters.clear()
        return len(rows)

    def relayed(self) -> asyncio.Future[int]:
        """A future set (to the row count) when the relay next relays rows."""
        waiter = asyncio.get_running_loop().create_future()
        self._relayed_waiters.append(waiter)
        return waiter

    async def run(self) -> None:
        """Every RELAY_INTERVAL_S: the acknowledged rows' delete, then the
        relay, until the backlog is under one batch."""
        while True:
            await asyncio.sleep(RELAY_INTERVAL_S)
            try:
                await self.delete_acknowledged()
                while await self.relay_once() == RELAY_BATCH:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Postgres or Redis away: the rows wait
                self._metrics.cache_outbox_relay_errors.inc()
                log.warning("outbox relay: %r", exc)

    async def close(self) -> None:
        """Delete what this process acknowledged (bounded; failures only cost
        a repeated invalidation)."""
        with suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.delete_acknowledged()
