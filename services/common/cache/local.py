"""The local tier: ready-to-send bodies in this process's memory, by scope.

Invariants:

* Bounded memory: the bytes held, counted with the entry cost model (body +
  key + ENTRY_OVERHEAD per entry, SCOPE_OVERHEAD per scope), never exceed
  `max_bytes` after a fill; the least recently used scope goes first. The map
  of per-scope invalidation sequences holds at most _SCOPE_SEQ_MAX scopes: the
  oldest are folded into `evicted_seq`, which then counts as their last
  invalidation (stricter, never laxer).
* No stale fill: a fill whose read began before its scope's last
  invalidation (`start_seq` taken before the read) is refused.

Synchronous and Redis-free: whether the tier may be used at all (the lease)
is decided by the caller (facade.py, coherence.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from ..metrics import Metrics

# What a local entry costs beyond its body: the key string, dict slots and the
# bytes object's header (measured with tracemalloc, rounded up). Counting only
# bodies let a walk over many small answers hold several times the budget.
ENTRY_OVERHEAD = 160
SCOPE_OVERHEAD = 420
_SCOPE_SEQ_MAX = 100_000


def _entry_cost(key: str, body: bytes) -> int:
    return len(body) + len(key) + ENTRY_OVERHEAD


def _scope_cost(entries: dict[str, bytes]) -> int:
    return SCOPE_OVERHEAD + sum(_entry_cost(k, b) for k, b in entries.items())


class LocalTier:
    """scope -> {key: body}, LRU by scope, bounded in bytes, with a sequence
    number per invalidated scope that refuses fills begun before it."""

    __slots__ = (
        "_metrics",
        "entries",
        "evicted_seq",
        "held_bytes",
        "max_bytes",
        "scope_seq",
        "seq",
    )

    def __init__(self, max_bytes: int, metrics: Metrics) -> None:
        self._metrics = metrics
        self.max_bytes = max_bytes
        # Never rebound (drop_all clears it): the facade reads it directly.
        self.entries: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self.held_bytes = 0
        # Invalidation sequence: a fill is refused when its scope was
        # invalidated after the fill's read began.
        self.seq = 0
        self.scope_seq: OrderedDict[str, int] = OrderedDict()
        self.evicted_seq = 0

    def get(self, scope: str, key: str) -> bytes | None:
        """The body held for (scope, key), marking the scope recently used.
        (ResponseCache.lookup inlines this: it is the hottest path.)"""
        entries = self.entries.get(scope)
        if entries is None:
            return None
        body = entries.get(key)
        if body is not None:
            self.entries.move_to_end(scope)
        return body

    def last_invalidation(self, scope: str) -> int:
        """The sequence number of the scope's last invalidation (0: never)."""
        return self.scope_seq.get(scope, self.evicted_seq)

    def fill(self, scope: str, key: str, body: bytes, start_seq: int) -> None:
        """Hold `body` unless the scope was invalidated after `start_seq` (the
        `seq` read before the body was), then evict down to `max_bytes`."""
        if self.last_invalidation(scope) > start_seq:
            return  # invalidated while we were reading: the body may predate the write
        entries = self.entries.get(scope)
        if entries is None:
            entries = self.entries[scope] = {}
            self.held_bytes += SCOPE_OVERHEAD
        else:
            self.entries.move_to_end(scope)
        # An exact-size copy: orjson returns bytes whose allocation keeps the
        # capacity of its write buffer (about 2 KiB for a 60-byte answer), and
        # a long-lived entry would hold all of it (measured with tracemalloc).
        body = bytes(memoryview(body))
        old = entries.get(key)
        entries[key] = body
        if old is None:
            self.held_bytes += _entry_cost(key, body)
        else:
            self.held_bytes += len(body) - len(old)
        while self.held_bytes > self.max_bytes and self.entries:
            _, evicted = self.entries.popitem(last=False)
            self.held_bytes -= _scope_cost(evicted)
        self._metrics.cache_local_bytes.set(self.held_bytes)

    def drop(self, scopes: Iterable[str]) -> None:
        """Forget the scopes' entries and refuse fills begun before now."""
        for scope in scopes:
            self.seq += 1
            self.scope_seq[scope] = self.seq
            self.scope_seq.move_to_end(scope)
            entries = self.entries.pop(scope, None)
            if entries is not None:
                self.held_bytes -= _scope_cost(entries)
        while len(self.scope_seq) > _SCOPE_SEQ_MAX:
            _, seq = self.scope_seq.popitem(last=False)
            self.evicted_seq = max(self.evicted_seq, seq)
        self._metrics.cache_local_bytes.set(self.held_bytes)

    def drop_all(self) -> None:
        """Forget every entry and refuse every fill begun before now."""
        self.seq += 1
        self.evicted_seq = self.seq  # every scope counts as invalidated now
        self.scope_seq.clear()
        self.entries.clear()
        self.held_bytes = 0
        self._metrics.cache_local_bytes.set(0)
