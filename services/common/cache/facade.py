"""ResponseCache: the cache a service uses, composed of the tiers and the
protocol beside this file (DESIGN.md tells how they keep read-your-writes).

Invariants upheld here, in the read path: the local tier and single-flight are
used only under a live lease (a process without one may not have applied an
invalidation published more than LEASE_S ago, so it neither trusts its local
entries nor joins a load under way); `start_seq` is taken before any tier is read, so a fill of a
body read before an invalidation is refused (local.py); Redis is asked only
while the breaker is closed and it pays off (always correct to skip it).
With read replicas attached (`attach_replicas`), a load runs at a WAL
position that covers every write published LEASE_S before the read began
(and the session's own write, its marker's LSN): the scope's `required_lsn`
(local.py) raised to the LSN in the Redis token read before the load;
without a lease, or while the position is unknown, it runs on the primary
(services/common/replicas.py, `load_at`). Without replicas the read path is
unchanged: one attribute test on a miss.
A read of the writer's own session just after its write
(`lookup_after_write`, its marker from `invalidate`) skips the local tier and
the loads under way, which may not have heard of the write yet: Redis and the
database already show it (and, with replicas, it loads at the write's LSN).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from ..metrics import Metrics
from . import cluster as cluster_ops
from .admission import Doorkeeper
from .coherence import Coherence
from .flights import Flights
from .local import LocalTier
from .redis_tier import RedisTier
from .resilience import Breaker
from .scripts import scope_key

if TYPE_CHECKING:
    from ..replicas import ReplicaRouter

log = logging.getLogger("runway.cache")

Loader = Callable[[], Awaitable[bytes]]

# Bound on stop() and, by default, drain(): a stuck task never holds up shutdown.
STOP_TIMEOUT_S = 5.0


class ResponseCache:
    """Two-tier response cache for one service namespace (see DESIGN.md)."""

    def __init__(
        self,
        redis: Redis | None,
        namespace: str,
        metrics: Metrics,
        *,
        ttl_s: int = 300,
        local_max_bytes: int = 64 * 1024 * 1024,
        timeout_s: float = 0.05,
        pubsub_factory: Callable[[], Redis] | None = None,
        cluster: bool = False,
        admit_on_second_access: bool = True,
    ) -> None:
        self._redis = redis
        self._cluster = cluster
        self._ns = namespace
        self._metrics = metrics
        self._breaker = Breaker(metrics)
        self._local_tier = LocalTier(local_max_bytes, metrics)
        self._local = self._local_tier.entries  # the same dict: one lookup less per hit
        self._flights = Flights()
        # None: every miss is cached (admission on first access).
        self._doorkeeper = Doorkeeper() if admit_on_second_access else None
        self._router: ReplicaRouter | None = None  # read replicas: attach_replicas()
        self._redis_tier = RedisTier(
            redis, self._breaker, ttl_s=ttl_s, timeout_s=timeout_s, cluster=cluster
        )
        self._coherence = Coherence(
            redis,
            namespace,
            metrics,
            self._breaker,
            ttl_s=ttl_s,
            timeout_s=timeout_s,
            pubsub_factory=pubsub_factory,
            drop=self._drop_local,
            drop_all=self._drop_all_local,
            cluster=cluster,
        )
        self._lease = self._coherence.lease  # its `until` is read on every request

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the namespace's invalidations and start renewing the lease."""
        if self._redis is None:
            return
        self._coherence.start()

    async def stop(self) -> None:
        """Cancel the listener and pinger, let batched reads and fills finish:
        all within STOP_TIMEOUT_S, so a stuck close never holds up shutdown."""
        coherence = self._coherence
        for task in coherence.tasks:
            task.cancel()
        self._redis_tier.send_fills()  # those waiting for a read batch to ride with
        pending = [*coherence.tasks, *self._redis_tier.background]
        coherence.tasks = []
        if self._cluster:
            await cluster_ops.close_node_clients(self._redis)
        if not pending:
            return
        _, stuck = await asyncio.wait(pending, timeout=STOP_TIMEOUT_S)
        for task in stuck:
            task.cancel()
        if stuck:
            log.warning(
                "cache stop: %d task(s) still running after %.0f s", len(stuck), STOP_TIMEOUT_S
            )
        for task in pending:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a failed fill at shutdown is not news

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until this process's own background work queued so far is done:
        the batched Redis reads and the fills waiting to ride with them are
        sent now, every batch task has finished, and (when subscribed) a
        beacon published now has come back through this process's listener, so
        every invalidation published before the call has been applied here.
        Returns False if that took over `timeout_s` (default STOP_TIMEOUT_S)
        or the beacon got no answer. For tests and orderly shutdowns; the
        request path never waits on it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (STOP_TIMEOUT_S if timeout_s is None else timeout_s)
        try:
            async with asyncio.timeout_at(deadline):
                await self._redis_tier.drain()
        except TimeoutError:
            return False
        if self._redis is None or not self._coherence.subscribed:
            return True
        remaining = deadline - loop.time()
        return remaining > 0 and await self._coherence.sync(remaining)

    async def wait_ready(self, timeout_s: float = 2.0) -> bool:
        """Wait until the local tier is live (subscribed and leased); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.local_live():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            # Not cancelled on timeout: the future is shared with other waiters.
            await asyncio.wait([self._coherence.lease_renewed()], timeout=remaining)
        return True

    def attach_replicas(self, router: ReplicaRouter) -> None:
        """Run loads on `router`'s replicas when they have replayed what the
        scope requires (the local tier then tracks invalidations' LSNs)."""
        self._router = router
        router.local = self._local_tier
        self._local_tier.track_lsns()

    def read_position(self, scope: str, token: str | None) -> int | str:
        """The WAL position a load of `scope` must see (int), or why it must
        run on the primary (str: no_lease, lsn_unknown). `token`: the scope's
        Redis token read before the load, if Redis was read."""
        if time.monotonic() >= self._lease.until:
            return "no_lease"  # invalidations older than LEASE_S may not all be applied here
        required = self._local_tier.required_lsn(scope)
        if required is None:
            return "lsn_unknown"
        if token:
            _, at, lsn = token.rpartition("@")
            if not at:
                return "lsn_unknown"  # replaced by an invalidation without an LSN
            required = max(required, int(lsn, 16))
        return required

    # --- state --------------------------------------------------------------

    def local_live(self) -> bool:
        """Whether the local tier may be used now (the lease is live)."""
        return time.monotonic() < self._lease.until

    def redis_usable(self) -> bool:
        """Whether reads may ask Redis now (configured, breaker closed)."""
        return self._redis is not None and self._breaker.closed()

    def state(self) -> dict[str, object]:
        """Redis up or down, local tier live or off, local bytes: for /readyz."""
        up = self._redis is not None and self._breaker.down_since is None
        return {
            "redis": "up" if up else "down",
            "local_tier": "live" if self.local_live() else "off",
            "local_bytes": self._local_tier.held_bytes,
        }

    # --- reads --------------------------------------------------------------

    async def get(self, scope: str, key: str, load: Loader) -> bytes:
        """The cached body for (scope, key), or `load()`'s, filled into both tiers."""
        return (await self.lookup(scope, key, load))[0]

    async def lookup(self, scope: str, key: str, load: Loader) -> tuple[bytes, str]:
        """Like get(), also saying where the body came from: local, redis, db or shared
        (joined a load already under way)."""
        if time.monotonic() >= self._lease.until:
            # Without a lease this process may not have applied every
            # invalidation older than LEASE_S, so a load already under way may
            # predate a write published before the bound: no joining
            # it (Postgres takes every such read; that is fail-open).
            return await self._fetch(scope, key, load)
        # LocalTier.get, inlined: this is the hottest path of every service.
        entries = self._local.get(scope)
        if entries is not None:
            body = entries.get(key)
            if body is not None:
                self._local.move_to_end(scope)
                self._metrics.cache_hit_local.inc()
                return body, "local"
        self._metrics.cache_miss_local.inc()
        doorkeeper = self._doorkeeper
        if doorkeeper is not None and not doorkeeper.admit(scope, key):
            # A first miss: answered from the database alone, not cached,
            # not shared (admission.py).
            return await self._fetch(scope, key, load, admitted=False)
        # One load per key per process however many requests miss at once.
        flight_key = (scope, key)
        flights = self._flights
        flight = flights.joinable(flight_key)
        if flight is not None:
            return (await asyncio.shield(flight))[0], "shared"
        future = flights.begin(flight_key)
        try:
            found = await self._fetch(scope, key, load)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: followers may not exist
            raise
        else:
            future.set_result(found)
            return found
        finally:
            flights.end(flight_key, future)

    async def lookup_after_write(
        self, scope: str, key: str, load: Loader, lsn: int = 0
    ) -> tuple[bytes, str]:
        """lookup() for a session that wrote within the staleness bound (its
        marker, services/common/responses.py): this process may not have
        applied that write's invalidation yet, so neither its local tier nor
        a load under way may answer. Redis may (the write replaced the token
        before its reply; fills are compare-and-set), and the database does,
        at or past `lsn` (the write's position, with read replicas)."""
        self._metrics.cache_miss_local.inc()
        return await self._fetch(scope, key, load, lsn)

    async def _fetch(
        self, scope: str, key: str, load: Loader, at_least: int = 0, *, admitted: bool = True
    ) -> tuple[bytes, str]:
        start_seq = self._local_tier.seq  # before any read: later invalidations refuse the fill
        leased = admitted and time.monotonic() < self._lease.until
        redis_key = scope_key(self._ns, self._coherence.gen, scope)
        token: str | None = None
        tier = self._redis_tier
        # A first miss (not admitted) skips Redis too: a key this process has
        # not missed lately is rarely there, and on a cold walk the sampled
        # reads cost 14% of the process (0039). Skipping Redis is correct,
        # except that with replicas its token's LSN covers writes whose
        # message is not applied here yet (invariant 11): then Redis is read
        # while it pays off. A read the skip leaves without a token loads at
        # what this process applied (within the bound) and fills no Redis.
        router = self._router
        if (admitted or router is not None) and self.redis_usable() and tier.pays_off():
            found = await tier.read(redis_key, key)
            if found is not None:
                raw_token, body = found
                tier.note(body is not None)
                if body is not None:
                    self._metrics.cache_hit_redis.inc()
                    if leased:
                        self._local_tier.fill(scope, key, body, start_seq)
                    return body, "redis"
                self._metrics.cache_miss_redis.inc()
                token = raw_token.decode() if raw_token is not None else ""
        if router is None:
            body = await load()
        else:
            position = self.read_position(scope, token)
            if at_least and isinstance(position, int):  # the session's own write
                position = max(position, at_least)
            body = await router.load_at(position, load)
        if token is not None and admitted:
            tier.queue_fill(redis_key, token, key, body)
        if leased:
            self._local_tier.fill(scope, key, body, start_seq)
        return body, "db"

    # --- writes -------------------------------------------------------------

    async def invalidate(self, *scopes: str, lsn: int | None = None) -> str:
        """Call after commit. Once this returns, Redis and this process no
        longer serve the scopes' old answers, and every other process stops
        within the lease's bound (LEASE_S). Returns the write's marker
        (`<ms since epoch>.<lsn hex>`) for the writer's session: a read that
        carries it sees the write at once, whichever process answers
        (responses.py). With read replicas, `lsn` is the write's commit
        position; by default the one Database.write_* recorded in this task,
        else a fresh primary reading (services/common/replicas.py)."""
        marker, _ = await self.invalidate_and_confirm(*scopes, lsn=lsn)
        return marker

    async def invalidate_and_confirm(
        self, *scopes: str, lsn: int | None = None
    ) -> tuple[str, bool]:
        """invalidate(), also saying whether Redis took it (when not, the
        invalidation is replayed later; the write's outbox row must stay:
        services/common/outbox.py)."""
        router = self._router
        if router is not None and lsn is None:
            lsn = await router.write_lsn()
        taken = await self._coherence.invalidate(scopes, lsn)
        now_ms = int(time.time() * 1000)
        return (f"{now_ms}.{lsn:x}" if lsn else f"{now_ms}."), taken

    async def flush_all(self) -> bool:
        """Forget everything of this namespace (after a bulk reload). Returns
        whether Redis took it (if not, it is replayed once Redis answers)."""
        return await self._coherence.flush_all()

    async def ping(self) -> bool:
        """Check Redis, refresh the generation, replay failed invalidations and
        renew the local tier's lease. Returns whether Redis answered."""
        return await self._coherence.ping()

    def _drop_local(self, scopes: Sequence[str], lsn: int | None = None) -> None:
        self._local_tier.drop(scopes, lsn)
        self._flights.drop(scopes)  # later readers must not join a pre-write load

    def _drop_all_local(self) -> None:
        self._local_tier.drop_all()
        self._flights.clear()


async def flush_namespace(
    redis_url: str, namespace: str, timeout_ms: int = 50, *, cluster: bool | None = None
) -> bool:
    """Forget a service's whole cache from outside its processes (the loader
    calls this after a bulk reload). Returns False when Redis did not answer:
    then the running processes still drop their local tiers within a lease,
    and Redis entries expire with their TTL. `cluster`: `redis_url` is a seed
    node of a Redis Cluster (default: the REDIS_CLUSTER environment variable)."""
    from ..resources import cache_redis_client

    if cluster is None:
        cluster = os.environ.get("REDIS_CLUSTER", "0") in ("1", "true", "yes")
    client = cache_redis_client(redis_url, timeout_ms, cluster=cluster)
    cache = ResponseCache(
        client,
        namespace,
        Metrics(namespace),
        timeout_s=timeout_ms / 1000,
        pubsub_factory=None if cluster else lambda: Redis.from_url(redis_url, socket_timeout=None),
        cluster=cluster,
    )
    try:
        await cache.start()
        if not await cache.wait_ready(2.0):
            return False
        return await cache.flush_all()
    finally:
        await cache.stop()
        await client.aclose()
