"""The Redis key scheme and the Lua scripts the cache runs there.

Invariants (each upheld inside one script, so atomically in Redis):

* No stale fill: a fill writes its body only if its scope's token is still
  the one the reader saw before it queried Postgres; every invalidation
  replaces the token.
* Fills before reads: in a batch that carries both, the fills run first, so a
  read of a hash filled in the same batch sees the fill.
* An invalidation replaces the scopes' hashes and publishes its message in one
  command: a reader that hears the message can no longer find the old entry.
* A beacon is counted and published in one command (BEACON_SCRIPT): a counter
  value read at time s proves that beacon was published before s.
* The generation never moves backwards: the ping raises it to the largest one
  the process has seen (an INCR lost in a failover).

Keys: ``ns:{gen}:{scope}`` is one scope's hash (field ``_v`` the token, one
field per key); ``<p>:gen`` the namespace's generation (bumped by a flush),
``<p>:inval`` the invalidation channel (beacons ride on it), ``<p>:beacon``
the beacon counter and ``<p>:beacon-lock`` who publishes the next one, where
``<p>`` is ``ns`` on one Redis and ``{ns}`` (one hash slot) on a cluster.
A scope's hash is one key: on a cluster each scope lives on its own slot.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


def scope_key(namespace: str, gen: str, scope: str) -> str:
    """The Redis hash of one scope in one generation of a namespace."""
    return f"{namespace}:{gen}:{scope}"


def ns_prefix(namespace: str, cluster: bool) -> str:
    """The prefix of the namespace's own keys and channel: hash-tagged on a
    cluster, so that the generation, the beacon and the channel share a slot."""
    return f"{{{namespace}}}" if cluster else namespace


def gen_key(prefix: str) -> str:
    """The key holding the namespace's generation."""
    return f"{prefix}:gen"


def inval_channel(prefix: str) -> str:
    """The channel carrying invalidations and the beacons that follow them."""
    return f"{prefix}:inval"


def beacon_keys(prefix: str) -> list[str]:
    """The keys of BEACON_SCRIPT: generation, beacon counter, beacon lock."""
    return [gen_key(prefix), f"{prefix}:beacon", f"{prefix}:beacon-lock"]


# A batch of fills, then a batch of reads, in one command. KEYS are the
# fills' hashes, then the reads'; ARGV[1] is the number of fills, then a
# (token, key, body, ttl) quadruple per fill, then the field of each read.
# Each fill writes only if its hash's token is still the one read before the
# database query (no stale fill). Returns each read's token and body.
FILL_THEN_READ_SCRIPT = """
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
READ_SCRIPT = """#!lua flags=no-writes
local found = {}
for i, hash in ipairs(KEYS) do
    found[i] = redis.call('HMGET', hash, '_v', ARGV[i])
end
return found
"""

# One invalidation in one command: each scope's hash replaced by a new token
# (in-flight fills now fail), then the message published (ARGV[3], ARGV[4];
# no channel: tokens only, as on a cluster, where the message goes on its
# own). Atomic like MULTI/EXEC, but one command to pack and one reply to
# parse instead of 3 per scope + 3: redis-py spends about 100 us of CPU per
# command (docs/decisions/, 0020). Nobody waits for acknowledgements
# (DESIGN.md, "Coherence"), so PUBLISH's count is not used.
INVALIDATE_SCRIPT = """
for _, key in ipairs(KEYS) do
    redis.call('DEL', key)
    redis.call('HSET', key, '_v', ARGV[1])
    redis.call('EXPIRE', key, ARGV[2])
end
if ARGV[3] then
    redis.call(ARGV[5], ARGV[3], ARGV[4])
end
return 1
"""

# The ping: the generation (raised to ARGV[4], the largest this process has
# seen, if Redis holds less: never backwards), and the beacon. Whoever first
# takes the lock (PX ARGV[2] ms; ARGV[3] '1' forces it) counts and publishes
# the next beacon 'b:<n>' on the channel ARGV[1] with the command ARGV[5]
# (PUBLISH, or SPUBLISH on a cluster); the others read the counter. Returns
# {generation, counter, 1 if this call published it else 0}.
BEACON_SCRIPT = """
local gen = tonumber(redis.call('GET', KEYS[1]) or '0')
local known = tonumber(ARGV[4])
if gen < known then
    redis.call('SET', KEYS[1], known)
    gen = known
end
if ARGV[3] == '1' or redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then
    local n = redis.call('INCR', KEYS[2])
    redis.call(ARGV[5], ARGV[1], 'b:' .. n)
    return {gen, n, 1}
end
return {gen, tonumber(redis.call('GET', KEYS[2]) or '0'), 0}
"""


class LuaScript:
    """A Lua script run by EVALSHA, loaded on first use and again after Redis
    lost its script cache (a restart)."""

    __slots__ = ("_sha", "_source")

    def __init__(self, source: str) -> None:
        self._source = source
        self._sha: str | None = None

    @property
    def source(self) -> str:
        return self._source

    @property
    def sha(self) -> str | None:
        return self._sha

    async def run(self, redis: Redis, keys: list[str], args: Iterable[object]) -> object:
        """EVALSHA the script over `keys` and `args`, loading it first if needed."""
        if self._sha is None:
            self._sha = await redis.script_load(self._source)
        try:
            return await redis.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            self._sha = await redis.script_load(self._source)
            return await redis.evalsha(self._sha, len(keys), *keys, *args)
