"""Coherence across processes: invalidations, acknowledgements and the lease.

Invariants:

* Read-your-writes: `invalidate()` and `flush_all()` return only once every
  subscribed process has dropped what they invalidate and acknowledged; or,
  when one did not acknowledge within ACK_TIMEOUT_S, once LEASE_S has passed
  since the publish; or, when Redis failed, once LEASE_S has passed since it
  failed (every lease has then lapsed).
* The writer drops its local scopes twice: before publishing and again after
  the delete reached Redis (or failed), since a read in between could put the
  old answer from Redis back into its local tier.
* A lease implies every earlier invalidation applied: it is renewed only once
  this process's own listener has handled a heartbeat published on the
  invalidation channel after the ping (Redis delivers a channel in order).
* An invalidation that failed is kept and replayed by its writer on the first
  ping that gets through; until then reads keep off Redis (the breaker's
  recovery grace, RECOVERY_GRACE_S).
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
from .resilience import (
    _REDIS_FAILURES,
    Breaker,
    LagTolerantTimeout,
    close_bounded,
    when_a_connection_frees,
)
from .scripts import INVALIDATE_SCRIPT, LuaScript, ack_channel, gen_key, inval_channel, scope_key

log = logging.getLogger("runway.cache")

LEASE_S = 0.3  # the local tier is trusted this long after a successful ping
PING_INTERVAL_S = 0.1
ACK_TIMEOUT_S = 0.25
RECOVERY_GRACE_S = 2 * PING_INTERVAL_S  # reads wait this long after Redis is back


class Coherence:
    """One process's side of the namespace's invalidation protocol: it
    publishes this process's invalidations and waits for the others' acks,
    applies theirs (through `drop` and `drop_all`, which must forget the local
    entries and the loads under way), and holds the local tier's lease."""

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
    ) -> None:
        self._redis = redis
        self._ns = namespace
        self._metrics = metrics
        self._breaker = breaker
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._pubsub_factory = pubsub_factory
        self._drop = drop
        self._drop_all = drop_all
        self.gen = "0"  # the namespace's generation, part of every scope key
        self._gen_key = gen_key(namespace)
        self._inval_channel = inval_channel(namespace)
        self._ack_channel = ack_channel(namespace)
        self.lease_until = 0.0  # the local tier may be used until then
        self._renewed: asyncio.Future[None] | None = None  # set at the next renewal
        self.subscribed = False
        self.pending: set[str] = set()  # scopes whose invalidation failed: replayed
        self.pending_all = False
        self.pending_lsn: int | None = 0  # the largest LSN pending (None: one unknown)
        self._acks: dict[str, list] = {}  # nonce -> [expected, acked, done]
        self._heartbeats: dict[str, asyncio.Future[None]] = {}
        self._invalidate_script = LuaScript(INVALIDATE_SCRIPT)
        self.tasks: list[asyncio.Task] = []  # the listener, then the pinger
        self._process = f"{os.getpid()}-{secrets.token_hex(3)}"

    def start(self) -> None:
        """Start the listener and the pinger (which renews the lease)."""
        self.tasks = [
            asyncio.create_task(self._listen(), name=f"cache-listen-{self._ns}"),
            asyncio.create_task(self._ping_loop(), name=f"cache-ping-{self._ns}"),
        ]

    def lease_renewed(self) -> asyncio.Future[None]:
        """A future set when the lease is next renewed (shared: do not cancel it)."""
        if self._renewed is None:
            self._renewed = asyncio.get_running_loop().create_future()
        return self._renewed

    def _renew(self, until: float) -> None:
        self.lease_until = until
        renewed, self._renewed = self._renewed, None
        if renewed is not None and not renewed.done():
            renewed.set_result(None)

    # --- writes -------------------------------------------------------------

    async def invalidate(self, scopes: Sequence[str], lsn: int | None = None) -> None:
        """Drop the scopes here, then in every process and in Redis (see the
        module docstring for when this returns). `lsn`: the write's commit
        position, with read replicas only."""
        self._drop(scopes, lsn)
        if self._redis is None:
            return
        message: dict = {"scopes": list(scopes)}
        if lsn is not None:
            message["lsn"] = lsn
        try:
            await self._broadcast(message, scopes)
        finally:
            # Again: until the delete reached Redis, a read here could still
            # find the old answer there and put it in this local tier (the
            # other processes drop the scope only after the delete).
            self._drop(scopes, lsn)

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
                self.gen = str(gen)
        except _REDIS_FAILURES as exc:
            self._breaker.trip(exc)
            self.pending_all = True
            await self._wait_out_leases()
            return False
        finally:
            self._drop_all()  # as in invalidate(): reads meanwhile saw the old generation
        return await self._broadcast({"all": True, "gen": self.gen}, ())

    async def _broadcast(self, message: dict, scopes: Sequence[str]) -> bool:
        """Publish an invalidation and wait for every process to apply it.
        Returns False when Redis failed (the scopes are then replayed later)."""
        assert self._redis is not None
        redis = self._redis
        nonce = secrets.token_hex(8)
        message["id"] = nonce
        message["from"] = self._process
        waiter = [None, 0, asyncio.get_running_loop().create_future()]  # expected, acked, done
        self._acks[nonce] = waiter
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
                args = (token, self._ttl * 2, self._inval_channel, orjson.dumps(message))
                subscribers = int(
                    await when_a_connection_frees(
                        lambda: self._invalidate_script.run(redis, keys, args)
                    )
                )
        except _REDIS_FAILURES as exc:
            self._acks.pop(nonce, None)
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
            await self._wait_out_leases()
            return False
        published = time.monotonic()
        # This process dropped the scopes before publishing; wait for the others.
        waiter[0] = subscribers - 1 if self.subscribed else subscribers
        if waiter[1] >= waiter[0]:
            waiter[2].set_result(None)
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                await waiter[2]
            self._metrics.cache_invalidations.labels("ok").inc()
        except TimeoutError:
            # A subscribed process did not answer in time: it is stalled or
            # overloaded. Its lease keeps it serving; say so in the metrics.
            log.warning("invalidation %s: %d of %d processes acked", nonce, waiter[1], waiter[0])
            self._metrics.cache_invalidations.labels("degraded").inc()
            # A process that has not applied it cannot renew its lease (leases
            # follow its own heartbeats through this channel, which arrive
            # after this message): none serves the old answer after this.
            remaining = published + LEASE_S - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
        finally:
            self._acks.pop(nonce, None)
        return True

    async def _wait_out_leases(self) -> None:
        """Redis failed us: every other process's lease lapses within LEASE_S of
        the failure, so after that none can serve a pre-write local entry."""
        down_since = self._breaker.down_since
        since = down_since if down_since is not None else time.monotonic()
        remaining = since + LEASE_S - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    def _on_ack(self, nonce: str) -> None:
        waiter = self._acks.get(nonce)
        if waiter is None:
            return
        waiter[1] += 1
        if waiter[0] is not None and waiter[1] >= waiter[0] and not waiter[2].done():
            waiter[2].set_result(None)

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

    async def _listen(self) -> None:
        assert self._redis is not None
        backoff = 0.05
        while True:
            client = self._pubsub_factory() if self._pubsub_factory else self._redis
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._inval_channel, self._ack_channel)
                # Messages sent while we were not subscribed are lost: start clean.
                self._drop_all()
                self.subscribed = True
                backoff = 0.05
                async for message in pubsub.listen():
                    await self.handle_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed:
                    log.warning("cache subscription lost: %r", exc)
            finally:
                self.subscribed = False
                self.lease_until = 0.0
                await close_bounded(pubsub.aclose(), pubsub.connection)
                if self._pubsub_factory:
                    await close_bounded(client.aclose(), None)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def handle_message(self, message: dict) -> None:
        """Apply one pub/sub message: an ack, a heartbeat or an invalidation
        (which is then acknowledged)."""
        assert self._redis is not None
        redis = self._redis
        channel = message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode()
        data = message["data"]
        if channel == self._ack_channel:
            self._on_ack(data.decode() if isinstance(data, bytes) else data)
            return
        payload = orjson.loads(data)
        if "hb" in payload:  # a heartbeat: only its sender cares
            heard = self._heartbeats.get(payload["hb"])
            if heard is not None and not heard.done():
                heard.set_result(None)
            return
        if payload.get("from") == self._process:
            return  # our own invalidation: applied before it was published
        if payload.get("all"):
            self.gen = str(payload.get("gen", self.gen))
            self._drop_all()
        else:
            self._drop(payload.get("scopes", ()), payload.get("lsn"))
        try:
            async with LagTolerantTimeout(self._timeout * 4):
                await when_a_connection_frees(
                    lambda: redis.publish(self._ack_channel, payload["id"])
                )
        except _REDIS_FAILURES as exc:
            self._breaker.trip(exc)

    # --- the lease ----------------------------------------------------------

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            await self.ping()

    async def ping(self) -> bool:
        """Check Redis, refresh the generation, replay failed invalidations and
        renew the local tier's lease. Returns whether Redis answered."""
        if self._redis is None:
            return False
        sent = time.monotonic()
        try:
            async with LagTolerantTimeout(self._timeout * 2):
                raw_gen = await self._redis.get(self._gen_key)
        except MaxConnectionsError:
            return False  # this process's own limit: no lease renewed, no breaker opened
        except _REDIS_FAILURES as exc:
            self._breaker.trip(exc)
            return False
        self._breaker.recovered(RECOVERY_GRACE_S)
        gen = raw_gen.decode() if raw_gen is not None else "0"
        lapsed = sent >= self.lease_until
        if gen != self.gen or lapsed:
            self.gen = gen
            self._drop_all()
        if self.pending_all or self.pending:
            if not await self._replay_pending():
                return True
        if self.subscribed and await self.heartbeat():
            self._renew(sent + LEASE_S)
        return True

    async def heartbeat(self, timeout_s: float | None = None) -> bool:
        """Publish a heartbeat on the invalidation channel and wait (at most
        `timeout_s`, by default twice the Redis deadline) until this process's
        own listener has handled it. Redis delivers a channel's messages in
        order, so every invalidation published before the heartbeat has then
        been applied here: a lease renewed this way never covers an
        invalidation this process has not seen, however far its listener lags
        (it then simply stops using the local tier)."""
        assert self._redis is not None
        nonce = secrets.token_hex(6)
        heard = asyncio.get_running_loop().create_future()
        self._heartbeats[nonce] = heard
        try:
            async with LagTolerantTimeout(timeout_s or self._timeout * 2):
                await self._redis.publish(self._inval_channel, orjson.dumps({"hb": nonce}))
                await heard
            return True
        except _REDIS_FAILURES:
            return False  # Redis answered the ping: the lag is ours, not a Redis failure
        finally:
            self._heartbeats.pop(nonce, None)
