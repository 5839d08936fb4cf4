"""The Redis key scheme and the Lua scripts the cache runs there.

Invariants (each upheld inside one script, so atomically in Redis):

* No stale fill: a fill writes its body only if its scope's token is still
  the one the reader saw before it queried Postgres; every invalidation
  replaces the token.
* Fills before reads: in a batch that carries both, the fills run first, so a
  read of a hash filled in the same batch sees the fill.
* An invalidation replaces the scopes' hashes and publishes its message in one
  command: a reader that hears the message can no longer find the old entry.

Keys: ``{ns}:{gen}:{scope}`` is one scope's hash (field ``_v`` the token, one
field per key), ``{ns}:gen`` the namespace's generation (bumped by a flush),
``{ns}:inval`` and ``{ns}:ack`` the invalidation and acknowledgement channels.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


def scope_key(namespace: str, gen: str, scope: str) -> str:
    """The Redis hash of one scope in one generation of a namespace."""
    return f"{namespace}:{gen}:{scope}"


def gen_key(namespace: str) -> str:
    """The key holding the namespace's generation."""
    return f"{namespace}:gen"


def inval_channel(namespace: str) -> str:
    """The channel carrying invalidations (and heartbeats, which must follow them)."""
    return f"{namespace}:inval"


def ack_channel(namespace: str) -> str:
    """The channel carrying acknowledgements of invalidations."""
    return f"{namespace}:ack"


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
# (in-flight fills now fail), then the message published; returns PUBLISH's
# count of subscribers. Atomic like MULTI/EXEC, but one command to pack and one
# reply to parse instead of 3 per scope + 3: redis-py spends about 100 us of
# CPU per command (docs/decisions/, 0020).
INVALIDATE_SCRIPT = """
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
        """EVALSHA the script over `keys` and `args`, loading it first if needed."""
        if self._sha is None:
            self._sha = await redis.script_load(self._source)
        try:
            return await redis.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            self._sha = await redis.script_load(self._source)
            return await redis.evalsha(self._sha, len(keys), *keys, *args)
