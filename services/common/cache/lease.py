"""The local tier's lease and the namespace's beacon.

Invariant (a lease implies every earlier invalidation applied): the lease is
renewed to s + LEASE_S only once this process's own listener has handled a
beacon published after s, on the invalidation channel, which Redis delivers
in order; so every invalidation published before s has been applied here.
Hence a process serving its local tier at time t has applied every
invalidation published before t - LEASE_S: the staleness bound for readers
outside the writer's session (DESIGN.md, invariant 1).

The beacon is one per namespace, not one per process: every PING_INTERVAL_S
each process runs BEACON_SCRIPT (scripts.py) at local time s, which either
takes the lock (BEACON_LOCK_MS) and publishes beacon n (then hearing n proves
the claim) or reads the counter n (then beacon n was published before s, and
hearing n + 1 proves it). One publish per interval, N deliveries: linear in
the fleet, where a heartbeat per process cost N^2 deliveries. Nobody waits
for anybody: a stalled or partitioned process's lease lapses on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.exceptions import MaxConnectionsError

from .resilience import _REDIS_FAILURES, Breaker, LagTolerantTimeout
from .scripts import BEACON_SCRIPT, LuaScript, beacon_keys, inval_channel

log = logging.getLogger("runway.cache")

LEASE_S = 0.25  # the staleness bound for other sessions' reads
PING_INTERVAL_S = 0.05
BEACON_LOCK_MS = 45  # at most one beacon per this long, whoever pings first
RECOVERY_GRACE_S = 4 * PING_INTERVAL_S  # reads wait this long after Redis is back


class Lease:
    """One process's lease on its local tier, renewed by its pings through
    the namespace's beacon. `until` is read on every request."""

    def __init__(self, prefix: str, breaker: Breaker, timeout_s: float, publish_cmd: str) -> None:
        self.until = 0.0  # the local tier may be used until then
        self.heard = 0  # the largest beacon this process's listener has handled
        self._breaker = breaker
        self._timeout = timeout_s
        self._keys = beacon_keys(prefix)
        self._channel = inval_channel(prefix)
        self._publish_cmd = publish_cmd
        self._script = LuaScript(BEACON_SCRIPT)
        self._claims: list[tuple[int, float]] = []  # (beacon needed, local time of the ping)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # drain()
        self._renewed: asyncio.Future[None] | None = None

    def renewed(self) -> asyncio.Future[None]:
        """A future set when the lease is next renewed (shared: do not cancel it)."""
        if self._renewed is None:
            self._renewed = asyncio.get_running_loop().create_future()
        return self._renewed

    def loaded(self) -> bool:
        """Whether the beacon script has run here before (its SHA is known)."""
        return self._script.sha is not None

    def lapse(self) -> None:
        """The subscription is gone: no lease, no pending claim."""
        self.until = 0.0
        self._claims.clear()

    def _renew(self, until: float) -> None:
        if until > self.until:
            self.until = until
        renewed, self._renewed = self._renewed, None
        if renewed is not None and not renewed.done():
            renewed.set_result(None)

    async def beacon(self, redis, gen: int, *, force: bool = False) -> tuple[int, int, bool]:
        """Run BEACON_SCRIPT: (generation, beacon counter, whether this call
        published that beacon). Raises on a Redis failure."""
        args = (self._channel, BEACON_LOCK_MS, "1" if force else "0", gen, self._publish_cmd)
        raw_gen, n, mine = await self._script.run(redis, self._keys, args)
        return int(raw_gen), int(n), bool(mine)

    def claim(self, n: int, mine: bool, sent: float) -> None:
        """The ping sent at `sent` read beacon counter `n`: renew the lease once
        the listener has handled beacon n (if this ping published it) or n + 1."""
        need = n if mine else n + 1
        if self.heard >= need:
            self._renew(sent + LEASE_S)
            return
        now = time.monotonic()
        # A claim older than LEASE_S could renew nothing (and one that read a
        # counter since reset, by a failover or a flush, would wait forever).
        self._claims = [c for c in self._claims if c[1] + LEASE_S > now]
        self._claims.append((need, sent))

    def on_beacon(self, n: int) -> None:
        """The listener handled beacon `n`: every message before it is applied."""
        # In order and counted by one INCR: n only grows, except when the
        # counter was reset (a failover, a flush), and then older claims wait
        # for a number they may never hear: they age out (claim()).
        self.heard = n
        if self._claims:
            granted = [sent for need, sent in self._claims if need <= n]
            if granted:
                self._claims = [c for c in self._claims if c[0] > n]
                self._renew(max(granted) + LEASE_S)
        if self._waiters:
            for need, future in self._waiters:
                if need <= n and not future.done():
                    future.set_result(None)
            self._waiters = [w for w in self._waiters if not w[1].done()]

    async def sync(self, redis, gen: int, timeout_s: float) -> bool:
        """Publish a beacon now and wait (at most `timeout_s`) until this
        process's listener has handled it: every invalidation published before
        the call has then been applied here (drain())."""
        future = asyncio.get_running_loop().create_future()
        try:
            async with LagTolerantTimeout(timeout_s):
                _, n, _ = await self.beacon(redis, gen, force=True)
                if self.heard >= n:
                    return True
                self._waiters.append((n, future))
                await future
            return True
        except _REDIS_FAILURES:
            return False
        finally:
            if not future.done():
                future.cancel()


async def ping_loop(ping: Callable[[], object]) -> None:
    """Ping every PING_INTERVAL_S (the lease is renewed by the beacons heard)."""
    while True:
        await asyncio.sleep(PING_INTERVAL_S)
        try:
            await ping()
        except MaxConnectionsError:
            pass
