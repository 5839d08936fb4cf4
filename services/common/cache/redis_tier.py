"""The Redis tier's reads and fills, batched per event-loop tick.

The misses of one tick share one round trip and one command (a Lua script
over the batch), which costs redis-py far less CPU than one command per key (a
cold workload misses on nearly every request). Fills wait up to FILL_RIDE_S
for the next read batch and go in its command, fills first; under a cold load
nearly every miss then costs one command instead of two.

Invariants:

* Fills before reads, each fill a compare-and-set on its scope's token, in one
  script (scripts.py): no stale fill, whatever a batch holds.
* Bounded memory: at most _FILL_QUEUE_MAX fills wait; beyond, fills are
  skipped (skipping a fill, or Redis, is always correct).
* Fail-open: every batch has a deadline; a Redis failure trips the breaker and
  its readers get None (they then load from Postgres).
* Adaptive skip (`pays_off`): while almost no local miss finds its answer in
  Redis, only one in REDIS_SAMPLE_EVERY asks.

On a Redis Cluster a batch is split per slot, one script call per slot,
pipelined per node (cluster.py); on one Redis it stays one script call.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable

from redis.asyncio import Redis
from redis.exceptions import MaxConnectionsError

from . import cluster as cluster_ops
from .resilience import _REDIS_FAILURES, Breaker, LagTolerantTimeout
from .scripts import FILL_THEN_READ_SCRIPT, READ_SCRIPT, LuaScript

_FILL_QUEUE_MAX = 1_000
# A fill waits this long for a read batch to ride with (one command for both:
# redis-py costs about 60 us of CPU per command, a cold read needs a read and a
# fill), then goes alone. Waiting is safe: a fill carries its token.
FILL_RIDE_S = 0.002
# Ask Redis on every local miss while at least this share of the recent ones
# found their answer there; below it, only one miss in REDIS_SAMPLE_EVERY.
REDIS_MIN_HIT_PERCENT = 5
REDIS_SAMPLE_EVERY = 8
REDIS_WINDOW = 2_000

Fill = tuple[str, str, str, bytes, int]  # redis_key, token, key, body, ttl
Read = tuple[str, str, asyncio.Future]  # redis_key, key, future of [token, body] or None


class RedisTier:
    """Batched reads and token-checked fills of one namespace's scope hashes."""

    def __init__(
        self,
        redis: Redis | None,
        breaker: Breaker,
        *,
        ttl_s: int,
        timeout_s: float,
        cluster: bool = False,
    ) -> None:
        self._redis = redis
        self._cluster = cluster
        self._breaker = breaker
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._fill_then_read_script = LuaScript(FILL_THEN_READ_SCRIPT)
        self._read_script = LuaScript(READ_SCRIPT)
        self._read_batch: list[Read] = []
        self._reads_handle: asyncio.Handle | None = None
        self._fill_batch: list[Fill] = []
        self._fill_timer: asyncio.TimerHandle | None = None
        self.background: set[asyncio.Task] = set()
        # The adaptive skip's window: reads Redis answered, of which hits.
        self.reads = 0
        self.hits = 0
        self._skipped = 0

    # --- reads and fills --------------------------------------------------

    def read(self, redis_key: str, key: str) -> asyncio.Future:
        """Resolves to [token, body] (either may be None), or None if Redis failed."""
        future = asyncio.get_running_loop().create_future()
        self._read_batch.append((redis_key, key, future))
        if len(self._read_batch) == 1:
            self._reads_handle = asyncio.get_running_loop().call_soon(self._send_reads)
        return future

    def note(self, hit: bool) -> None:
        """Count one read Redis answered, for `pays_off`."""
        self.reads += 1
        if hit:
            self.hits += 1

    def pays_off(self) -> bool:
        """Whether this local miss should ask Redis. When almost no local miss
        finds its answer in Redis (traffic spread over far more keys than are
        cached: a cold catalogue walk), the round trip and the fill are pure
        cost, so only one miss in REDIS_SAMPLE_EVERY asks (and fills), enough to
        notice when Redis starts paying off again. Skipping Redis is always
        correct: the answer then comes from Postgres."""
        if self.reads >= REDIS_WINDOW:  # a decaying window over recent reads
            self.reads //= 2
            self.hits //= 2
        if self.reads < REDIS_WINDOW // 4:
            return True
        if self.hits * 100 >= self.reads * REDIS_MIN_HIT_PERCENT:
            return True
        self._skipped += 1
        return self._skipped % REDIS_SAMPLE_EVERY == 0

    def queue_fill(self, redis_key: str, token: str, key: str, body: bytes) -> None:
        """Fill (key, body) into the hash if its token is still `token`: with
        the next read batch, or alone after FILL_RIDE_S."""
        if len(self._fill_batch) >= _FILL_QUEUE_MAX:
            return  # Redis is not keeping up: skipping a fill is always correct
        ttl = int(self._ttl * random.uniform(0.9, 1.1))  # jitter: no synchronized expiry
        self._fill_batch.append((redis_key, token, key, body, ttl))
        if self._fill_timer is None and not self._read_batch:  # else _send_reads takes it
            self._fill_timer = asyncio.get_running_loop().call_later(FILL_RIDE_S, self.send_fills)

    def send_fills(self) -> None:
        """The fills no read batch took (within FILL_RIDE_S, or at once), alone."""
        fills = self._take_fills()
        if fills:
            self._spawn(self._run_batch(fills, []))

    async def drain(self) -> None:
        """Send the reads and fills queued so far now, and wait until every
        batch task has finished (those its readers' fills then queue too)."""
        while True:
            if self._reads_handle is not None:
                self._reads_handle.cancel()
                self._send_reads()
            self.send_fills()
            if not self.background:
                return
            await asyncio.wait(set(self.background))

    # --- batches ----------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _send_reads(self) -> None:
        self._reads_handle = None
        reads, self._read_batch = self._read_batch, []
        self._spawn(self._run_batch(self._take_fills(), reads))

    def _take_fills(self) -> list[Fill]:
        if self._fill_timer is not None:
            self._fill_timer.cancel()
            self._fill_timer = None
        fills, self._fill_batch = self._fill_batch, []
        return fills

    async def _run_batch(self, fills: list[Fill], reads: list[Read]) -> None:
        assert self._redis is not None
        results: list | None = None
        try:
            async with LagTolerantTimeout(self._timeout if reads else self._timeout * 2):
                if self._cluster:
                    results = await cluster_ops.run_batch(self._redis, fills, reads)
                    return
                hashes = [redis_key for redis_key, _, _ in reads]
                fields = [key for _, key, _ in reads]
                if fills:
                    hashes[:0] = [redis_key for redis_key, _, _, _, _ in fills]
                    args: list[object] = [len(fills)]
                    for _, token, key, body, ttl in fills:
                        args += (token, key, body, ttl)
                    script = self._fill_then_read_script
                    results = await script.run(self._redis, hashes, args + fields)
                else:
                    results = await self._read_script.run(self._redis, hashes, fields)
        except MaxConnectionsError:
            pass  # this process's own limit: reads go to Postgres, fills are skipped
        except _REDIS_FAILURES as exc:
            self._breaker.trip(exc)
        finally:
            for i, (_, _, future) in enumerate(reads):
                if not future.done():
                    future.set_result(results[i] if results is not None else None)
