"""Read replicas with causal reads: cached reads run on a streaming replica
only once it has replayed every write the cache requires: the session's own,
and every write published LEASE_S before the read began (and, when the read
asked Redis, every write acknowledged before it began).

Invariants (cache/DESIGN.md, "Read replicas", invariant 11):

* A read on a replica has replayed every write its position requires.
  A load runs under `load_at(position)`, the position the cache computed for
  its scope (cache/facade.py `read_position`: the scope's `required_lsn`,
  local.py, raised to the LSN in the Redis token when Redis was read, and to
  the session marker's LSN); `read()` sends it to a
  replica whose *known* replay LSN is at or past it, else to the primary. The
  known replay LSN is a reading of `pg_last_wal_replay_lsn()` taken before the
  query is sent, so a lower bound of what the replica shows it.
* A write's LSN is read on its own connection after its commit (`write()`,
  `pg_current_wal_lsn()`, which a synchronous commit has passed) and rides
  with its invalidation; when it is unknown the invalidation carries a fresh
  primary reading, else none (then every process asks the primary again).
* No lease, an unknown position, an uncached read: the primary.
* A replica that fails a query is marked down and the read runs on the
  primary: no request fails for a replica.

The monitor (one task per process, only when replicas are configured) reads
every MONITOR_INTERVAL_S the primary's `pg_current_wal_lsn()` (which also
sets the cache's unknown LSN floor, local.py `note_primary_lsn`) and each
replica's replay LSN on a connection of its own; a replica that errs or takes
over PROBE_TIMEOUT_S is down, one that shows the primary as of more than
`max_lag_s` ago (its lag: the time since the newest primary reading its
replay LSN has reached) is skipped; both come back on the next good reading.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import asyncpg

from .db import session_settings
from .fair_pool import FairPool
from .metrics import LoopCounter, Metrics
from .replica_probe import (
    HISTORY,
    MONITOR_INTERVAL_S,
    PRIMARY_LSN_SQL,
    PROBE_TIMEOUT_S,
    REPLAY_LSN_SQL,
    Probe,
    ReplicaCollector,
    ReplicaState,
    label,
    no_reset,
)

if TYPE_CHECKING:
    from .cache.local import LocalTier
    from .db import Database

log = logging.getLogger("runway.replicas")

# The position a cached load must see (int), or why it runs on the primary
# (str); unset: an uncached read, on the primary. Set by the cache around a load.
READ_AT: ContextVar[int | str | None] = ContextVar("runway_read_at", default=None)
# The largest commit LSN of this task's writes (-1: one of them unknown).
WROTE_AT: ContextVar[int | None] = ContextVar("runway_wrote_at", default=None)

# What a failing replica raises: the read then runs on the primary.
REPLICA_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting, cancelled
    asyncpg.exceptions.SerializationError,  # conflict with recovery on a hot standby
    asyncpg.exceptions.InternalClientError,  # a connection left mid-operation by a reset
)
# Of those, the ones that say nothing about the replica's health: the read
# falls back to the primary, the replica stays in use.
_QUERY_FAILURES = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.QueryCanceledError,  # its statement_timeout
)

# Why a read ran on the primary (runway_db_reads_total{server="primary",reason}).
PRIMARY_REASONS = (
    "uncached",  # not read through the cache (carts, readiness): always the primary
    "no_lease",  # the cache's coherence does not hold now
    "lsn_unknown",  # the position to reach is unknown (just after a local drop_all)
    "not_caught_up",  # no usable replica has replayed the position yet
    "replica_lagging",  # every replica up is past the lag bound
    "replica_down",  # no replica answers
    "replica_failed",  # the replica chosen failed the query
    "not_found_on_replica",  # a lookup found nothing there: asked again here
)


class ReplicaRouter:
    """Routes a process's reads over its replicas and the primary (see module)."""

    def __init__(
        self,
        primary: Database,
        primary_url: str,
        urls: Sequence[str],
        metrics: Metrics,
        *,
        service: str,
        max_lag_s: float,
        statement_timeout_ms: int,
        connect_timeout_s: float,
        pool_max: int,
    ) -> None:
        self._primary = primary
        probe_name = f"runway-{service}-probe"
        self._primary_probe = Probe(primary_url, probe_name)
        self.replicas = [
            ReplicaState(url, label(url), probe=Probe(url, probe_name)) for url in urls
        ]
        self.max_lag_s = max_lag_s
        self.local: LocalTier | None = None  # set by ResponseCache.attach_replicas
        self.causal = True  # tests only: False reads any replica up (the naive router)
        self._service = service
        self._statement_timeout_ms = statement_timeout_ms
        self._connect_timeout_s = connect_timeout_s
        self._pool_max = pool_max
        self._next = 0
        self._history: deque[tuple[float, int]] = deque(maxlen=HISTORY)
        self.primary_lsn: int | None = None
        self._task: asyncio.Task | None = None
        reads = LoopCounter(
            metrics.registry,
            "runway_db_reads",
            "Reads of cached answers by server (replica, primary) and, for the primary, why",
            ["server", "reason"],
        )
        self._on_primary = {reason: reads.labels("primary", reason) for reason in PRIMARY_REASONS}
        self._on_replica = reads.labels("replica", "caught_up")
        metrics.registry.register(ReplicaCollector(self))

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Replica pools (connecting on demand: a replica down at start is no
        failure) and the monitor; returns after the first monitor pass."""
        for replica in self.replicas:
            replica.pool = await asyncpg.create_pool(
                replica.url,
                min_size=0,
                max_size=self._pool_max,
                reset=no_reset,
                timeout=self._connect_timeout_s,
                command_timeout=self._statement_timeout_ms / 1000 + 1,
                # The primary's serving-session settings (db.session_settings).
                server_settings={
                    "application_name": f"runway-{self._service}",
                    **session_settings(self._statement_timeout_ms),
                },
            )
            replica.fair = FairPool(replica.pool)
        await self.tick()
        self._task = asyncio.create_task(self._monitor(), name=f"replicas-{self._service}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._primary_probe.close()
        for replica in self.replicas:
            if replica.probe is not None:
                replica.probe.close()
            if replica.pool is not None:
                if replica.fair is not None:
                    await replica.fair.release_idle()
                try:
                    await asyncio.wait_for(replica.pool.close(), 5)
                except TimeoutError:
                    replica.pool.terminate()

    def state(self) -> list[dict[str, object]]:
        """Each replica's state, for /readyz."""
        return [
            {
                "replica": r.label,
                "up": r.up,
                "within_lag_bound": r.fresh,
                "lag_ms": round(r.lag_s * 1000) if r.up and r.lag_s != math.inf else None,
            }
            for r in self.replicas
        ]

    def counts(self) -> dict[str, int]:
        """Reads so far: "replica", and "primary:<reason>" for each reason."""
        found = {f"primary:{r}": c.value for r, c in self._on_primary.items()}
        return {"replica": self._on_replica.value, **found}

    # --- reads --------------------------------------------------------------

    async def load_at(self, position: int | str, load: Callable[[], Awaitable[bytes]]) -> bytes:
        """Run the cache's `load()` with its reads at `position` (see READ_AT)."""
        reset = READ_AT.set(position)
        try:
            return await load()
        finally:
            READ_AT.reset(reset)

    def pick(self, required: int) -> ReplicaState | str:
        """The next replica (round robin) up, within the lag bound and known to
        have replayed `required`; else why none is (a PRIMARY_REASONS entry)."""
        replicas = self.replicas
        count = len(replicas)
        start = self._next
        reason = "replica_down"
        for i in range(count):
            replica = replicas[(start + i) % count]
            if not replica.up:
                continue
            if not replica.fresh:
                if reason == "replica_down":
                    reason = "replica_lagging"
                continue
            if replica.replay < required and self.causal:
                reason = "not_caught_up"
                continue
            self._next = (start + i + 1) % count
            return replica
        return reason

    async def read(
        self, method: str, sql: str, args: tuple[Any, ...], confirm_empty: bool = False
    ) -> Any:
        """One read statement where READ_AT says it may run. `confirm_empty`:
        an empty result on a replica is read again on the primary (see
        Database.read_fetch_found)."""
        position = READ_AT.get()
        if position.__class__ is int:
            target = self.pick(position)  # type: ignore[arg-type]
        else:
            target = position or "uncached"
        if target.__class__ is str:
            self._on_primary[target].value += 1  # type: ignore[index]
            return await self._primary._one_statement(method, sql, args)
        replica: ReplicaState = target  # type: ignore[assignment]
        try:
            result = await self._on(replica, method, sql, args)
        except REPLICA_FAILURES as exc:
            if not isinstance(exc, _QUERY_FAILURES):
                self._mark_down(replica, exc)
                if replica.fair is not None:
                    await replica.fair.expire()  # the others are likely broken
            self._on_primary["replica_failed"].value += 1
            return await self._primary._one_statement(method, sql, args)
        self._on_replica.value += 1
        if confirm_empty and not result:
            self._on_primary["not_found_on_replica"].value += 1
            return await self._primary._one_statement(method, sql, args)
        return result

    async def _on(self, replica: ReplicaState, method: str, sql: str, args: tuple) -> Any:
        assert replica.fair is not None
        async with asyncio.timeout(self._connect_timeout_s):
            conn = await replica.fair.take()
        try:
            # A bound with no deadline, until the replica is marked down:
            # _mark_down expires it, so a read stuck on a replica that hangs
            # falls back to the primary then, not at its statement timeout.
            async with asyncio.timeout(None) as bound:
                replica.in_flight.add(bound)
                try:
                    return await getattr(conn, method)(sql, *args)
                finally:
                    replica.in_flight.discard(bound)
        except BaseException:
            conn.terminate()  # never handed out again in whatever state it is
            raise
        finally:
            await replica.fair.give_back(conn)

    def _mark_down(self, replica: ReplicaState, exc: BaseException) -> None:
        if replica.up:
            log.warning("replica %s down: %r", replica.label, exc)
        replica.up = False
        replica.fresh = False
        if replica.in_flight:
            now = asyncio.get_running_loop().time()
            for bound in replica.in_flight:
                bound.reschedule(now)
        # Unknown until read again: a replica that restarted after a crash may
        # accept reads at a replay position below the one last read.
        replica.replay = -1

    # --- writes -------------------------------------------------------------

    async def write(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        """One write statement on the primary, then, on the same connection
        (after its commit), the WAL position it reached, kept in WROTE_AT."""
        primary = self._primary
        conn = await primary.acquire()
        try:
            value = await getattr(conn, method)(sql, *args)
            try:
                lsn = await conn.fetchval(PRIMARY_LSN_SQL)
            except Exception as exc:  # committed: the invalidation asks again
                log.warning("reading the LSN after a write failed: %r", exc)
                lsn = -1
        finally:
            await primary.release(conn)
        before = WROTE_AT.get()
        if before is None or (before >= 0 and lsn > before) or lsn < 0:
            WROTE_AT.set(lsn)
        return value

    async def write_lsn(self) -> int | None:
        """The position of this task's writes so far (then forgotten), else a
        fresh primary reading (every write that committed before is behind it),
        else None (the invalidation then makes every process ask the primary)."""
        lsn = WROTE_AT.get()
        if lsn is not None:
            WROTE_AT.set(None)
            if lsn >= 0:
                return lsn
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                return await self._primary._one_statement("fetchval", PRIMARY_LSN_SQL, ())
        except Exception as exc:
            log.warning("no LSN for an invalidation: %r", exc)
            return None

    # --- the monitor --------------------------------------------------------

    async def _read_primary(self) -> int:
        return (await self._primary_probe.fetchval(PRIMARY_LSN_SQL))[0]

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the monitor die
                log.exception("replica monitor pass failed")

    async def tick(self) -> None:
        """One pass: the primary's position, then every replica's."""
        local = self.local
        drops = local.drops if local is not None else 0
        sent = time.monotonic()
        results = await asyncio.gather(
            self._read_primary(),
            *(self._probe(r) for r in self.replicas),
            return_exceptions=True,
        )
        primary = results[0]
        if isinstance(primary, int):
            self.primary_lsn = primary
            self._history.append((sent, primary))
            if local is not None:
                local.note_primary_lsn(primary, drops)
        now = time.monotonic()
        for replica, reading in zip(self.replicas, results[1:], strict=True):
            if isinstance(reading, BaseException):
                self._mark_down(replica, reading)
                continue
            replay, connected = reading
            if not replica.up:
                log.info("replica %s up, replayed %x", replica.label, replay)
            replica.up = True
            # Within one session the replay position only grows; a new session
            # may be a restarted server: its reading replaces the old one.
            replica.replay = replay if connected else max(replica.replay, replay)
            replica.lag_s = self._lag(replica.replay, now)
            newest = self._history[-1][1] if self._history else replay
            replica.lag_bytes = max(0, newest - replica.replay)
            replica.fresh = replica.lag_s <= self.max_lag_s

    def _lag(self, replay: int, now: float) -> float:
        """How long ago the primary was where the replica is: since the newest
        primary reading (its send time) at or behind `replay`."""
        history = self._history
        for sent, lsn in reversed(history):
            if lsn <= replay:
                return now - sent
        return now - history[0][0] if history else math.inf

    async def _probe(self, replica: ReplicaState) -> tuple[int, bool]:
        assert replica.probe is not None
        replay, connected = await replica.probe.fetchval(REPLAY_LSN_SQL)
        if replay is None:
            raise RuntimeError("not a standby (pg_last_wal_replay_lsn() is NULL)")
        return replay, connected
