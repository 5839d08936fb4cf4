"""Coherence across processes: invalidations, their replay, the generation.

Invariants:

* After `invalidate()` returns, Redis never serves the scopes' old answers:
  their tokens were replaced (synchronously; on a cluster, acknowledged by a
  replica with WAIT, else the invalidation counts as failed) and every fill
  is a compare-and-set on the token. The writer does not wait for the other
  processes: they apply the message within the lease's bound (lease.py), and
  the writer's own session skips their local tiers meanwhile (its write
  marker, facade.py `lookup_after_write`).
* The writer drops its local scopes twice: before publishing and again after
  the delete reached Redis (or failed), since a read in between could put the
  old answer from Redis back into its local tier.
* An invalidation that failed is kept and replayed by its writer on the first
  ping that gets through, and the writer waits out LEASE_S from the failure
  before replying; until the replay, reads keep off Redis (the breaker's
  recovery grace, RECOVERY_GRACE_S).
* The generation never moves backwards: this process keeps the largest it
  has seen, and its ping raises Redis's to it (scripts.py BEACON_SCRIPT).
* With read replicas, an invalidation carries its write's LSN: in the message
  (every process records it for the scopes, local.py) and in the scopes' new
  Redis token (`<nonce>@<lsn hex>`), so a reader that finds the new token
  before its listener has applied the message still loads at or after the
  write (facade.py, services/common/replicas.py). A replayed invalidation
  carries the largest LSN of those it replays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import MaxConnectionsError

from ..metrics import Metrics
from . import cluster as cluster_ops
from .bus import Bus
from .grouping import InvalidationGroups
from .lease import LEASE_S, PING_INTERVAL_S, RECOVERY_GRACE_S, Lease, ping_loop
from .resilience import (
    _REDIS_FAILURES,
    Breaker,
    LagTolerantTimeout,
    when_a_connection_frees,
)
from .scripts import INVALIDATE_SCRIPT, LuaScript, gen_key, inval_channel, ns_prefix, scope_key

log = logging.getLogger("runway.cache")

__all__ = ["LEASE_S", "PING_INTERVAL_S", "RECOVERY_GRACE_S", "Coherence"]


class Coherence:
    """One process's side of the namespace's invalidation protocol: it
    publishes this process's invalidations, applies the others' (through
    `drop` and `drop_all`, which must forget the local entries and the loads
    under way), and holds the local tier's lease (lease.py)."""

    def __init__(
        self,
        redis: Redis | None,
        namespace: str,
        metrics: Metrics,
        breaker: Breaker,
        *,
        ttl_s: int,
        timeout_s: float,
        pubsub_factory: Callable[[], Redis] | None,
        drop: Callable[[Sequence[str], int | None], None],
        drop_all: Callable[[], None],
        cluster: bool = False,
    ) -> None:
        self._redis = redis
        self._ns = namespace
        self._metrics = metrics
        self._breaker = breaker
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._drop = drop
        self._drop_all = drop_all
        self.cluster = cluster
        prefix = ns_prefix(namespace, cluster)
        self.gen = "0"  # the namespace's generation, part of every scope key
        self._gen_key = gen_key(prefix)
        self._inval_channel = inval_channel(prefix)
        self._publish_cmd = "SPUBLISH" if cluster else "PUBLISH"
        self.lease = Lease(prefix, breaker, timeout_s, self._publish_cmd)
        self.bus = Bus(
            redis,
            self._inval_channel,
            cluster=cluster,
            pubsub_factory=pubsub_factory,
            handle=lambda message: self.handle_message(message),
            on_subscribed=drop_all,
            on_lost=self.lease.lapse,
        )
        self.pending: set[str] = set()  # scopes whose invalidation failed: replayed
        self.pending_all = False
        self.pending_lsn: int | None = 0  # the largest LSN pending (None: one unknown)
        self._invalidate_script = LuaScript(INVALIDATE_SCRIPT)
        self._groups = InvalidationGroups(self._invalidate_group)
        self.tasks: list[asyncio.Task] = []  # the listener, then the pinger
        self._ping_lock = asyncio.Lock()
        self._process = f"{os.getpid()}-{secrets.token_hex(3)}"

    @property
    def subscribed(self) -> bool:
        return self.bus.subscribed

    @property
    def lease_until(self) -> float:
        return self.lease.until

    def start(self) -> None:
        """Start the listener and the pinger (which renews the lease)."""
        self.tasks = [
            asyncio.create_task(self.bus.run(), name=f"cache-listen-{self._ns}"),
            asyncio.create_task(ping_loop(self.ping), name=f"cache-ping-{self._ns}"),
        ]

    def lease_renewed(self) -> asyncio.Future[None]:
        """A future set when the lease is next renewed (shared: do not cancel it)."""
        return self.lease.renewed()

    # --- writes -------------------------------------------------------------

    async def invalidate(self, scopes: Sequence[str], lsn: int | None = None) -> bool:
        """Drop the scopes here and in Redis, and tell every process (see the
        module docstring). `lsn`: the write's commit position, with read
        replicas only. Returns whether Redis took it."""
        self._drop(scopes, lsn)
        if self._redis is None:
            return True
        try:
            taken = await self._groups.submit(scopes, lsn)
        finally:
            # Again: until the delete reached Redis, a read here could still
            # find the old answer there and put it in this local tier.
            self._drop(scopes, lsn)
        if not taken:
            await self._wait_out_leases()
        return taken

    async def _invalidate_group(self, scopes: list[str], lsn: int | None) -> bool:
        """One Redis call for a group of writes' scopes (grouping.py)."""
        message: dict = {"scopes": scopes}
        if lsn is not None:
            message["lsn"] = lsn
        return await self._broadcast(message, scopes)

    async def flush_all(self) -> bool:
        """Start a new generation and have every process drop everything.
        Returns whether Redis took it (if not, it is replayed once Redis answers)."""
        self._drop_all()
        if self._redis is None:
            return True
        redis = self._redis
        try:
            async with LagTolerantTimeout(self._timeout * 20):
                gen = await when_a_connection_frees(lambda: redis.incr(self._gen_key))
                if self.cluster:  # a generation lost at a failover would move backwards
                    await cluster_ops.replicated(redis, self._gen_key, self._timeout * 10)
                self.gen = str(max(int(gen), int(self.gen) + 1))
        except _REDIS_FAILURES as exc:
            self._breaker.trip(exc)
            self.pending_all = True
            await self._wait_out_leases()
            return False
        finally:
            self._drop_all()  # as in invalidate(): reads meanwhile saw the old generation
        taken = await self._broadcast({"all": True, "gen": self.gen}, ())
        if not taken:
            await self._wait_out_leases()
        return taken

    async def _broadcast(self, message: dict, scopes: Sequence[str]) -> bool:
        """Replace the scopes' tokens and publish the message. Returns False when
        Redis failed (the scopes are then replayed later; the callers wait out
        the leases)."""
        assert self._redis is not None
        redis = self._redis
        nonce = secrets.token_hex(8)
        message["from"] = self._process
        try:
            # Tried even while this process's breaker is open. The breaker
            # spares reads a dead Redis's timeouts, but it also opens on a
            # blip or this process's own lag while Redis serves every other
            # process: skipping the delete would leave them reading the old
            # answer from Redis (and from their local tiers, which nobody told).
            async with LagTolerantTimeout(self._timeout * 4):
                keys = [scope_key(self._ns, self.gen, scope) for scope in scopes]
                lsn = message.get("lsn")
                token = nonce if lsn is None else f"{nonce}@{lsn:x}"
                body = orjson.dumps(message)
                if self.cluster:
                    await cluster_ops.invalidate(
                        redis,
                        self._invalidate_script,
                        keys,
                        token,
                        self._ttl * 2,
                        self._inval_channel,
                        body,
                        self._timeout * 4,
                    )
                else:
                    args = (token, self._ttl * 2, self._inval_channel, body, "PUBLISH")
                    await when_a_connection_frees(
                        lambda: self._invalidate_script.run(redis, keys, args)
                    )
        except _REDIS_FAILURES as exc:
            self._breaker.trip(exc)
            self._metrics.cache_invalidations.labels("failed").inc()
            if scopes:
                lsn = message.get("lsn")
                pending_lsn = self.pending_lsn
                if lsn is None or pending_lsn is None:
                    self.pending_lsn = None
                else:
                    self.pending_lsn = max(pending_lsn, lsn)
            self.pending.update(scopes)
            return False
        self._metrics.cache_invalidations.labels("ok").inc()
        return True

    async def _wait_out_leases(self) -> None:
        """Redis failed us: every other process's lease lapses within LEASE_S of
        the failure, so after that none can serve a pre-write local entry."""
        down_since = self._breaker.down_since
        since = down_since if down_since is not None else time.monotonic()
        remaining = since + LEASE_S - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def _replay_pending(self) -> bool:
        scopes, flush, lsn = list(self.pending), self.pending_all, self.pending_lsn
        self.pending.clear()
        self.pending_all = False
        self.pending_lsn = 0
        try:
            if flush:
                await self.flush_all()
            elif scopes:
                await self.invalidate(scopes, lsn or None)
        except Exception as exc:  # keep them for the next ping
            log.warning("replaying invalidations failed: %r", exc)
            self.pending.update(scopes)
            self.pending_lsn = (
                None if lsn is None or self.pending_lsn is None else max(lsn, self.pending_lsn)
            )
            self.pending_all = self.pending_all or flush
            return False
        return not (self.pending or self.pending_all)

    # --- the listener -------------------------------------------------------

    async def handle_message(self, message: dict) -> None:
        """Apply one pub/sub message: a beacon or an invalidation."""
        data = message["data"]
        if data[:2] == b"b:":
            self.lease.on_beacon(int(data[2:]))
            return
        payload = orjson.loads(data)
        if payload.get("from") == self._process:
            return  # our own invalidation: applied before it was published
        if payload.get("all"):
            self._raise_gen(payload.get("gen", self.gen))
            self._drop_all()
        else:
            self._drop(payload.get("scopes", ()), payload.get("lsn"))

    def _raise_gen(self, gen: object) -> bool:
        """Keep the largest generation seen; True if it changed."""
        new = int(gen)  # type: ignore[call-overload]
        if new > int(self.gen):
            self.gen = str(new)
            return True
        return False

    # --- the lease ----------------------------------------------------------

    async def ping(self) -> bool:
        """Check Redis, refresh the generation, replay failed invalidations and
        claim the lease's renewal (lease.py). Returns whether Redis answered.
        One at a time (the pinger and an explicit call): pings never need a
        second connection, whose connect a stalled loop could time out."""
        async with self._ping_lock:
            return await self._ping()

    async def _ping(self) -> bool:
        if self._redis is None:
            return False
        redis = self._redis
        sent = time.monotonic()
        # The first ping also connects and loads the script: more time for it.
        span = self._timeout * (2 if self.lease.loaded() else 10)
        try:
            async with LagTolerantTimeout(span):
                gen, n, mine = await self.lease.beacon(redis, int(self.gen))
        except MaxConnectionsError:
            return False  # this process's own limit: no lease renewed, no breaker opened
        except _REDIS_FAILURES as exc:
            self._breaker.trip(exc)
            return False
        self._breaker.recovered(RECOVERY_GRACE_S)
        changed = self._raise_gen(gen)
        if changed or sent >= self.lease.until:
            self._drop_all()
        if self.pending_all or self.pending:
            if not await self._replay_pending():
                return True
        if self.subscribed:
            self.lease.claim(n, mine, sent)
        return True

    async def sync(self, timeout_s: float) -> bool:
        """Wait until every invalidation published before the call has been
        applied here (a beacon published now has come back): for drain()."""
        assert self._redis is not None
        return await self.lease.sync(self._redis, int(self.gen), timeout_s)
