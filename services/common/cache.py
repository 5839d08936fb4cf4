"""Read-through cache of ready-to-send response bytes, in two tiers: a bounded
in-process LRU (hits cost no round trip) over a shared Redis (hits cost one).
The design, and why it keeps read-your-writes across processes, is in
README.md beside this file. In short:

* Entries are grouped by *scope* (e.g. ``p:42``, everything shown for product
  42). A write invalidates scopes, never single keys.
* Redis holds one hash per scope, ``{ns}:{gen}:{scope}``, whose ``_v`` field is
  a token replaced by every invalidation. A reader fills only if the token is
  still the one it saw before reading Postgres (compare-and-set in Lua), so a
  slow reader can never put a pre-write answer back (no stale fill).
* Every process subscribes to ``{ns}:inval``. An invalidation is published
  after commit and the writer waits until every subscribed process has dropped
  the scope and acknowledged, before it answers: a read that starts after the
  reply finds no old entry in any process (read-your-writes).
* The local tier is trusted only under a lease renewed by a 100 ms ping, once
  the process has heard its own heartbeat on the invalidation channel (so it
  has applied every earlier invalidation; a writer whose acks time out waits
  out the lease of whoever did not answer). When Redis stalls or dies, leases
  lapse within ``LEASE_S``; a writer that cannot reach Redis waits out that
  lease before replying. Requests then go straight to Postgres (fail-open),
  and caching resumes when the ping succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import MaxConnectionsError, NoScriptError, RedisError

from .metrics import Metrics

log = logging.getLogger("runway.cache")

Loader = Callable[[], Awaitable[bytes]]
T = TypeVar("T")

LEASE_S = 0.3  # the local tier is trusted this long after a successful ping
PING_INTERVAL_S = 0.1
ACK_TIMEOUT_S = 0.25
BREAKER_S = 1.0  # after a Redis error, skip Redis this long (the pinger may close it sooner)
RECOVERY_GRACE_S = 2 * PING_INTERVAL_S  # reads wait this long after Redis is back (see _recovered)
# Bounds on closing a pub/sub connection and on stop(): redis-py's aclose()
# can wait forever in StreamWriter.wait_closed() (redis/redis-py#3941), which
# held up a test's app shutdown until pytest-timeout killed it.
CLOSE_TIMEOUT_S = 1.0
STOP_TIMEOUT_S = 5.0
_SCOPE_SEQ_MAX = 100_000
# What a local entry costs beyond its body: the key string, dict slots and the
# bytes object's header (measured with tracemalloc, rounded up). Counting only
# bodies let a walk over many small answers hold several times the budget.
ENTRY_OVERHEAD = 160
SCOPE_OVERHEAD = 420
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

# A batch of fills, then a batch of reads, in one command. KEYS are the
# fills' hashes, then the reads'; ARGV[1] is the number of fills, then a
# (token, key, body, ttl) quadruple per fill, then the field of each read.
# Each fill writes only if its hash's token is still the one read before the
# database query (no stale fill). Returns each read's token and body.
_FILL_THEN_READ_SCRIPT = """
local fills = tonumber(ARGV[1])
for i = 1, fills do
    local hash, a = KEYS[i], 1 + (i - 1) * 4
    local cur = redis.call('HGET', hash, '_v')
    if not cur then cur = '' end
    if cur == ARGV[a + 1] then
        if cur == '' then redis.call('HSETNX', hash, '_v', '') end
        redis.call('HSET', hash, ARGV[a + 2], ARGV[a + 3])
        redis.call('EXPIRE', hash, ARGV[a + 4])
    end
end
local found, before = {}, 1 + fills * 4
for j = 1, #KEYS - fills do
    found[j] = redis.call('HMGET', KEYS[fills + j], '_v', ARGV[before + j])
end
return found
"""

# A batch of reads alone: per hash (KEYS[i]) its token and the body under
# ARGV[i]. Read-only, so Redis runs it under maxmemory like a plain read.
_READ_SCRIPT = """#!lua flags=no-writes
local found = {}
for i, hash in ipairs(KEYS) do
    found[i] = redis.call('HMGET', hash, '_v', ARGV[i])
end
return found
"""

# One invalidation in one command: each scope's hash replaced by a new token
# (in-flight fills now fail), then the message published; returns PUBLISH's
# count of subscribers. Atomic like MULTI/EXEC, but one command to pack and one
# reply to parse instead of 3 per scope + 3: redis-py spends about 100 us of
# CPU per command (bench/README.md, "Changes").
_INVALIDATE_SCRIPT = """
for _, key in ipairs(KEYS) do
    redis.call('DEL', key)
    redis.call('HSET', key, '_v', ARGV[1])
    redis.call('EXPIRE', key, ARGV[2])
end
return redis.call('PUBLISH', ARGV[3], ARGV[4])
"""


class LuaScript:
    """A Lua script run by EVALSHA, loaded on first use and again after Redis
    lost its script cache (a restart)."""

    __slots__ = ("_sha", "_source")

    def __init__(self, source: str) -> None:
        self._source = source
        self._sha: str | None = None

    async def run(self, redis: Redis, keys: list[str], args: Iterable[object]) -> object:
        if self._sha is None:
            self._sha = await redis.script_load(self._source)
        try:
            return await redis.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            self._sha = await redis.script_load(self._source)
            return await redis.evalsha(self._sha, len(keys), *keys, *args)


# RuntimeError: under uvloop, a call that reconnects to a Redis that just went
# away can raise "unable to perform operation on <TCPTransport closed=True>".
_REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError, RuntimeError)
POOL_WAIT_S = 0.001  # between tries for a connection when this process's pool is exhausted


async def when_a_connection_frees(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, tried again while this process's Redis connection pool is
    exhausted (within the caller's deadline). MaxConnectionsError is this
    process's own limit, not a Redis failure: taken for an outage, it would
    let a writer reply before the other processes heard of its write.
    (redis-py's blocking pool waits too, but costs 15-20 us more per call.)"""
    while True:
        try:
            return await call()
        except MaxConnectionsError:
            await asyncio.sleep(POOL_WAIT_S)


class LagTolerantTimeout:
    """`asyncio.timeout(seconds)` that does not blame Redis for this process's
    own lag. When the event loop is stalled (CPU saturation, a long callback)
    the deadline's timer runs late, possibly before the loop has read a reply
    that arrived in time, and a 50 ms deadline would then trip the breaker of a
    healthy Redis. A timer that runs more than half its span late re-arms for
    one more span instead (at most `extensions` times); on time, it expires."""

    __slots__ = ("_extensions", "_handle", "_loop", "_seconds", "_timeout")

    def __init__(self, seconds: float, extensions: int = 2) -> None:
        self._seconds = seconds
        self._extensions = extensions

    async def __aenter__(self) -> LagTolerantTimeout:
        self._loop = asyncio.get_running_loop()
        self._timeout = asyncio.timeout(None)
        await self._timeout.__aenter__()
        self._arm(self._loop.time() + self._seconds)
        return self

    def _arm(self, due: float) -> None:
        self._handle = self._loop.call_at(due, self._check, due)

    def _check(self, due: float) -> None:
        now = self._loop.time()
        if now - due > self._seconds / 2 and self._extensions > 0:
            self._extensions -= 1
            self._arm(now + self._seconds)
        else:
            self._timeout.reschedule(now)  # expire: TimeoutError leaves the block

    async def __aexit__(self, *exc_info: object) -> bool | None:
        self._handle.cancel()
        return await self._timeout.__aexit__(*exc_info)  # type: ignore[arg-type]


async def close_bounded(closing: Awaitable[object], connection: object | None) -> None:
    """Await a redis-py close for at most CLOSE_TIMEOUT_S, ignoring its errors.
    On a timeout, drop `connection`'s socket without waiting (nowait), so a
    hung close leaks nothing."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await closing
    except TimeoutError:
        log.warning("redis close took over %.0f s (redis-py#3941): socket dropped", CLOSE_TIMEOUT_S)
        disconnect = getattr(connection, "disconnect", None)
        if disconnect is not None:
            with contextlib.suppress(Exception):
                await disconnect(nowait=True)
    except Exception:  # a connection already broken: nothing left to close
        pass


def _entry_cost(key: str, body: bytes) -> int:
    return len(body) + len(key) + ENTRY_OVERHEAD


def _scope_cost(entries: dict[str, bytes]) -> int:
    return SCOPE_OVERHEAD + sum(_entry_cost(k, b) for k, b in entries.items())


class ResponseCache:
    """Two-tier response cache for one service namespace (see module docstring)."""

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
    ) -> None:
        self._redis = redis
        self._ns = namespace
        self._metrics = metrics
        self._ttl = ttl_s
        self._local_max = local_max_bytes
        self._timeout = timeout_s
        self._pubsub_factory = pubsub_factory
        self._gen = "0"
        self._gen_key = f"{namespace}:gen"
        self._inval_channel = f"{namespace}:inval"
        self._ack_channel = f"{namespace}:ack"
        # Local tier: scope -> {key: body}, LRU by scope, bounded in bytes.
        self._local: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._local_bytes = 0
        # Invalidation sequence: a local fill is refused when its scope was
        # invalidated after the fill's read began.
        self._seq = 0
        self._scope_seq: OrderedDict[str, int] = OrderedDict()
        self._evicted_seq = 0
        self._flights: dict[tuple[str, str], asyncio.Future[tuple[bytes, str]]] = {}
        self._lease_until = 0.0
        self._down_until = 0.0
        self._down_since: float | None = None
        self._subscribed = False
        self._pending: set[str] = set()
        self._pending_all = False
        self._acks: dict[str, list] = {}
        self._heartbeats: dict[str, asyncio.Future[None]] = {}
        self._fill_then_read_script = LuaScript(_FILL_THEN_READ_SCRIPT)
        self._read_script = LuaScript(_READ_SCRIPT)
        self._invalidate_script = LuaScript(_INVALIDATE_SCRIPT)
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._read_batch: list[tuple[str, str, asyncio.Future]] = []
        self._fill_batch: list[tuple[str, str, str, bytes, int]] = []
        self._fill_timer: asyncio.TimerHandle | None = None
        self._redis_reads = 0
        self._redis_hits = 0
        self._redis_skipped = 0
        self._process = f"{os.getpid()}-{secrets.token_hex(3)}"

    # --- lifecycle ------------------------------------------------------

    async def start(self) -> None:
        if self._redis is None:
            return
        self._tasks = [
            asyncio.create_task(self._listen(), name=f"cache-listen-{self._ns}"),
            asyncio.create_task(self._ping_loop(), name=f"cache-ping-{self._ns}"),
        ]

    async def stop(self) -> None:
        """Cancel the listener and pinger, let batched reads and fills finish:
        all within STOP_TIMEOUT_S, so a stuck close never holds up shutdown."""
        for task in self._tasks:
            task.cancel()
        self._send_fills()  # those waiting for a read batch to ride with
        pending = [*self._tasks, *self._background]
        self._tasks = []
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

    async def wait_ready(self, timeout_s: float = 2.0) -> bool:
        """Wait until the local tier is live (subscribed and leased); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.local_live():
                return True
            await asyncio.sleep(0.01)
        return False

    # --- state ------------------------------------------------------------

    def local_live(self) -> bool:
        return time.monotonic() < self._lease_until

    def redis_usable(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._down_until

    def state(self) -> dict[str, object]:
        return {
            "redis": "up" if self._redis is not None and self._down_since is None else "down",
            "local_tier": "live" if self.local_live() else "off",
            "local_bytes": self._local_bytes,
        }

    def _trip(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning("redis unavailable, serving from postgres: %r", exc)
        self._down_until = now + BREAKER_S
        self._metrics.cache_error_redis.inc()

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        log.info("redis answers again, caching resumes")
        self._down_since = None
        # Writes made during the outage could not delete their old answers
        # from Redis; each writer replays them on its first ping that gets
        # through (within a ping interval). Reads keep off Redis until then.
        self._down_until = time.monotonic() + RECOVERY_GRACE_S

    # --- reads --------------------------------------------------------------

    async def get(self, scope: str, key: str, load: Loader) -> bytes:
        """The cached body for (scope, key), or `load()`'s, filled into both tiers."""
        return (await self.lookup(scope, key, load))[0]

    async def lookup(self, scope: str, key: str, load: Loader) -> tuple[bytes, str]:
        """Like get(), also saying where the body came from: local, redis, db or shared
        (joined a load already under way)."""
        if time.monotonic() >= self._lease_until:
            # Without a lease this process may not have applied every
            # acknowledged invalidation, so a load already under way may
            # predate a write whose reply came before this request: no joining
            # it (Postgres takes every such read; that is fail-open).
            return await self._fetch(scope, key, load)
        entries = self._local.get(scope)
        if entries is not None:
            body = entries.get(key)
            if body is not None:
                self._local.move_to_end(scope)
                self._metrics.cache_hit_local.inc()
                return body, "local"
        self._metrics.cache_miss_local.inc()
        # One load per key per process however many requests miss at once.
        flight_key = (scope, key)
        flight = self._flights.get(flight_key)
        if flight is not None:
            return (await asyncio.shield(flight))[0], "shared"
        future: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        self._flights[flight_key] = future
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
            if self._flights.get(flight_key) is future:
                del self._flights[flight_key]

    async def _fetch(self, scope: str, key: str, load: Loader) -> tuple[bytes, str]:
        start_seq = self._seq
        leased = time.monotonic() < self._lease_until
        redis_key = f"{self._ns}:{self._gen}:{scope}"
        token: str | None = None
        if self.redis_usable() and self._redis_pays_off():
            found = await self._read_redis(redis_key, key)
            if found is not None:
                raw_token, body = found
                self._redis_reads += 1
                if body is not None:
                    self._redis_hits += 1
                    self._metrics.cache_hit_redis.inc()
                    if leased:
                        self._fill_local(scope, key, body, start_seq)
                    return body, "redis"
                self._metrics.cache_miss_redis.inc()
                token = raw_token.decode() if raw_token is not None else ""
        body = await load()
        if token is not None:
            self._queue_fill(redis_key, token, key, body)
        if leased:
            self._fill_local(scope, key, body, start_seq)
        return body, "db"

    # Redis reads are batched per event-loop tick: the misses of one tick share
    # one round trip and one command (a Lua script over the batch), which costs
    # redis-py far less CPU than one command per key (a cold workload misses on
    # nearly every request). Fills wait up to FILL_RIDE_S for the next read
    # batch and go in its command, fills first; under a cold load nearly every
    # miss then costs one command instead of two.

    def _read_redis(self, redis_key: str, key: str) -> asyncio.Future:
        """Resolves to [token, body] (either may be None), or None if Redis failed."""
        future = asyncio.get_running_loop().create_future()
        self._read_batch.append((redis_key, key, future))
        if len(self._read_batch) == 1:
            asyncio.get_running_loop().call_soon(self._send_reads)
        return future

    def _send_reads(self) -> None:
        reads, self._read_batch = self._read_batch, []
        self._spawn(self._run_batch(self._take_fills(), reads))

    def _queue_fill(self, redis_key: str, token: str, key: str, body: bytes) -> None:
        if len(self._fill_batch) >= _FILL_QUEUE_MAX:
            return  # Redis is not keeping up: skipping a fill is always correct
        ttl = int(self._ttl * random.uniform(0.9, 1.1))  # jitter: no synchronized expiry
        self._fill_batch.append((redis_key, token, key, body, ttl))
        if self._fill_timer is None and not self._read_batch:  # else _send_reads takes it
            self._fill_timer = asyncio.get_running_loop().call_later(FILL_RIDE_S, self._send_fills)

    def _take_fills(self) -> list[tuple[str, str, str, bytes, int]]:
        if self._fill_timer is not None:
            self._fill_timer.cancel()
            self._fill_timer = None
        fills, self._fill_batch = self._fill_batch, []
        return fills

    def _send_fills(self) -> None:
        """The fills no read batch took within FILL_RIDE_S, alone."""
        fills = self._take_fills()
        if fills:
            self._spawn(self._run_batch(fills, []))

    async def _run_batch(
        self,
        fills: list[tuple[str, str, str, bytes, int]],
        reads: list[tuple[str, str, asyncio.Future]],
    ) -> None:
        assert self._redis is not None
        results: list | None = None
        try:
            async with LagTolerantTimeout(self._timeout if reads else self._timeout * 2):
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
            self._trip(exc)
        finally:
            for i, (_, _, future) in enumerate(reads):
                if not future.done():
                    future.set_result(results[i] if results is not None else None)

    def _redis_pays_off(self) -> bool:
        """Whether this local miss should ask Redis. When almost no local miss
        finds its answer in Redis (traffic spread over far more keys than are
        cached: a cold catalogue walk), the round trip and the fill are pure
        cost, so only one miss in REDIS_SAMPLE_EVERY asks (and fills), enough to
        notice when Redis starts paying off again. Skipping Redis is always
        correct: the answer then comes from Postgres."""
        if self._redis_reads >= REDIS_WINDOW:  # a decaying window over recent reads
            self._redis_reads //= 2
            self._redis_hits //= 2
        if self._redis_reads < REDIS_WINDOW // 4:
            return True
        if self._redis_hits * 100 >= self._redis_reads * REDIS_MIN_HIT_PERCENT:
            return True
        self._redis_skipped += 1
        return self._redis_skipped % REDIS_SAMPLE_EVERY == 0

    def _fill_local(self, scope: str, key: str, body: bytes, start_seq: int) -> None:
        if self._last_invalidation(scope) > start_seq:
            return  # invalidated while we were reading: the body may predate the write
        entries = self._local.get(scope)
        if entries is None:
            entries = self._local[scope] = {}
            self._local_bytes += SCOPE_OVERHEAD
        else:
            self._local.move_to_end(scope)
        # An exact-size copy: orjson returns bytes whose allocation keeps the
        # capacity of its write buffer (about 2 KiB for a 60-byte answer), and
        # a long-lived entry would hold all of it (measured with tracemalloc).
        body = bytes(memoryview(body))
        old = entries.get(key)
        entries[key] = body
        if old is None:
            self._local_bytes += _entry_cost(key, body)
        else:
            self._local_bytes += len(body) - len(old)
        while self._local_bytes > self._local_max and self._local:
            _, evicted = self._local.popitem(last=False)
            self._local_bytes -= _scope_cost(evicted)
        self._metrics.cache_local_bytes.set(self._local_bytes)

    def _last_invalidation(self, scope: str) -> int:
        return self._scope_seq.get(scope, self._evicted_seq)

    # --- invalidation -------------------------------------------------------

    def _drop_local(self, scopes: Iterable[str]) -> None:
        for scope in scopes:
            self._seq += 1
            self._scope_seq[scope] = self._seq
            self._scope_seq.move_to_end(scope)
            entries = self._local.pop(scope, None)
            if entries is not None:
                self._local_bytes -= _scope_cost(entries)
            for flight_key in [k for k in self._flights if k[0] == scope]:
                del self._flights[flight_key]  # later readers must not join a pre-write load
        while len(self._scope_seq) > _SCOPE_SEQ_MAX:
            _, seq = self._scope_seq.popitem(last=False)
            self._evicted_seq = max(self._evicted_seq, seq)
        self._metrics.cache_local_bytes.set(self._local_bytes)

    def _drop_all_local(self) -> None:
        self._seq += 1
        self._evicted_seq = self._seq  # every scope counts as invalidated now
        self._scope_seq.clear()
        self._local.clear()
        self._local_bytes = 0
        self._flights.clear()
        self._metrics.cache_local_bytes.set(0)

    async def invalidate(self, *scopes: str) -> None:
        """Call after commit: no process serves the scopes' old answers once this returns."""
        self._drop_local(scopes)
        if self._redis is None:
            return
        try:
            await self._broadcast({"scopes": list(scopes)}, scopes)
        finally:
            # Again: until the delete reached Redis, a read here could still
            # find the old answer there and put it in this local tier (the
            # other processes drop the scope only after the delete).
            self._drop_local(scopes)

    async def flush_all(self) -> bool:
        """Forget everything of this namespace (after a bulk reload). Returns
        whether Redis took it (if not, it is replayed once Redis answers)."""
        self._drop_all_local()
        if self._redis is None:
            return True
        try:
            async with LagTolerantTimeout(self._timeout * 20):
                gen = await when_a_connection_frees(lambda: self._redis.incr(self._gen_key))
                self._gen = str(gen)
        except _REDIS_FAILURES as exc:
            self._trip(exc)
            self._pending_all = True
            await self._wait_out_leases()
            return False
        finally:
            self._drop_all_local()  # as in invalidate(): reads meanwhile saw the old generation
        return await self._broadcast({"all": True, "gen": self._gen}, ())

    async def _broadcast(self, message: dict, scopes: Iterable[str]) -> bool:
        """Publish an invalidation and wait for every process to apply it.
        Returns False when Redis failed (the scopes are then replayed later)."""
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
                keys = [f"{self._ns}:{self._gen}:{scope}" for scope in scopes]
                args = (nonce, self._ttl * 2, self._inval_channel, orjson.dumps(message))
                subscribers = int(
                    await when_a_connection_frees(
                        lambda: self._invalidate_script.run(self._redis, keys, args)
                    )
                )
        except _REDIS_FAILURES as exc:
            self._acks.pop(nonce, None)
            self._trip(exc)
            self._metrics.cache_invalidations.labels("failed").inc()
            self._pending.update(scopes)
            await self._wait_out_leases()
            return False
        published = time.monotonic()
        # This process dropped the scopes before publishing; wait for the others.
        waiter[0] = subscribers - 1 if self._subscribed else subscribers
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
        since = self._down_since if self._down_since is not None else time.monotonic()
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

    # --- background: subscription and lease -----------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            client = self._pubsub_factory() if self._pubsub_factory else self._redis
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._inval_channel, self._ack_channel)
                # Messages sent while we were not subscribed are lost: start clean.
                self._drop_all_local()
                self._subscribed = True
                backoff = 0.05
                async for message in pubsub.listen():
                    await self._handle_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._subscribed:
                    log.warning("cache subscription lost: %r", exc)
            finally:
                self._subscribed = False
                self._lease_until = 0.0
                await close_bounded(pubsub.aclose(), pubsub.connection)
                if self._pubsub_factory:
                    await close_bounded(client.aclose(), None)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _handle_message(self, message: dict) -> None:
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
            self._gen = str(payload.get("gen", self._gen))
            self._drop_all_local()
        else:
            self._drop_local(payload.get("scopes", ()))
        try:
            async with LagTolerantTimeout(self._timeout * 4):
                await when_a_connection_frees(
                    lambda: self._redis.publish(self._ack_channel, payload["id"])
                )
        except _REDIS_FAILURES as exc:
            self._trip(exc)

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
            self._trip(exc)
            return False
        self._recovered()
        gen = raw_gen.decode() if raw_gen is not None else "0"
        lapsed = sent >= self._lease_until
        if gen != self._gen or lapsed:
            self._gen = gen
            self._drop_all_local()
        if self._pending_all or self._pending:
            if not await self._replay_pending():
                return True
        if self._subscribed and await self._heartbeat():
            self._lease_until = sent + LEASE_S
        return True

    async def _heartbeat(self) -> bool:
        """Publish a heartbeat on the invalidation channel and wait until this
        process's own listener has handled it. Redis delivers a channel's
        messages in order, so every invalidation published before the
        heartbeat has then been applied here: a lease renewed this way never
        covers an invalidation this process has not seen, however far its
        listener lags (it then simply stops using the local tier)."""
        nonce = secrets.token_hex(6)
        heard = asyncio.get_running_loop().create_future()
        self._heartbeats[nonce] = heard
        try:
            async with LagTolerantTimeout(self._timeout * 2):
                await self._redis.publish(self._inval_channel, orjson.dumps({"hb": nonce}))
                await heard
            return True
        except _REDIS_FAILURES:
            return False  # Redis answered the ping: the lag is ours, not a Redis failure
        finally:
            self._heartbeats.pop(nonce, None)

    async def _replay_pending(self) -> bool:
        scopes, flush = list(self._pending), self._pending_all
        self._pending.clear()
        self._pending_all = False
        try:
            if flush:
                await self.flush_all()
            elif scopes:
                await self.invalidate(*scopes)
        except Exception as exc:  # keep them for the next ping
            log.warning("replaying invalidations failed: %r", exc)
            self._pending.update(scopes)
            self._pending_all = self._pending_all or flush
            return False
        return not (self._pending or self._pending_all)


async def flush_namespace(redis_url: str, namespace: str, timeout_ms: int = 50) -> bool:
    """Forget a service's whole cache from outside its processes (the loader
    calls this after a bulk reload). Returns False when Redis did not answer:
    then the running processes still drop their local tiers within a lease,
    and Redis entries expire with their TTL."""
    client = Redis.from_url(redis_url, socket_timeout=timeout_ms / 1000)
    cache = ResponseCache(
        client,
        namespace,
        Metrics(namespace),
        timeout_s=timeout_ms / 1000,
        pubsub_factory=lambda: Redis.from_url(redis_url, socket_timeout=None),
    )
    try:
        await cache.start()
        if not await cache.wait_ready(2.0):
            return False
        return await cache.flush_all()
    finally:
        await cache.stop()
        await client.aclose()
