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
* With read replicas (services/common/replicas.py, `track_lsns()`): per
  scope, the largest WAL position (LSN) of the invalidations applied here,
  kept in step with the sequence map (an evicted scope's LSN folds into
  `lsn_floor`). `required_lsn(scope)` covers every write to the scope whose
  invalidation was applied here; after `drop_all` (or an invalidation without
  an LSN) the floor is unknown (None) until a primary reading taken after it
  (`note_primary_lsn`), and `required_lsn` says None meanwhile.

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
        "drops",
        "entries",
        "evicted_seq",
        "held_bytes",
        "lsn_floor",
        "max_bytes",
        "scope_lsn",
        "scope_seq",
        "seq",
        "tracks_lsns",
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
        # Read replicas only (track_lsns): scope -> LSN of its last applied
        # invalidation, a subset of scope_seq's keys, evicted with them.
        self.tracks_lsns = False
        self.scope_lsn: dict[str, int] = {}
        self.lsn_floor: int | None = None  # None: unknown, reads go to the primary
        self.drops = 0  # bumped whenever the floor becomes unknown

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

    def drop(self, scopes: Iterable[str], lsn: int | None = None) -> None:
        """Forget the scopes' entries and refuse fills begun before now; when
        tracking LSNs, record `lsn` (the write's commit position) for them."""
        tracks = self.tracks_lsns
        for scope in scopes:
            self.seq += 1
            self.scope_seq[scope] = self.seq
            self.scope_seq.move_to_end(scope)
            entries = self.entries.pop(scope, None)
            if entries is not None:
                self.held_bytes -= _scope_cost(entries)
            if tracks and lsn is not None and lsn > self.scope_lsn.get(scope, -1):
                self.scope_lsn[scope] = lsn
        while len(self.scope_seq) > _SCOPE_SEQ_MAX:
            evicted, seq = self.scope_seq.popitem(last=False)
            self.evicted_seq = max(self.evicted_seq, seq)
            folded = self.scope_lsn.pop(evicted, None) if tracks else None
            if folded is not None and self.lsn_floor is not None and folded > self.lsn_floor:
                self.lsn_floor = folded
        if tracks and lsn is None:
            self.forget_lsns()  # a write of unknown position: ask the primary again
        self._metrics.cache_local_bytes.set(self.held_bytes)

    def drop_all(self) -> None:
        """Forget every entry and refuse every fill begun before now."""
        self.seq += 1
        self.evicted_seq = self.seq  # every scope counts as invalidated now
        self.scope_seq.clear()
        self.entries.clear()
        self.held_bytes = 0
        self._metrics.cache_local_bytes.set(0)
        self.scope_lsn.clear()
        self.forget_lsns()  # invalidations may have been missed: positions unknown

    # --- WAL positions, for read replicas (services/common/replicas.py) ------

    def track_lsns(self) -> None:
        """Record invalidations' LSNs from now on; unknown until a primary reading."""
        self.tracks_lsns = True
        self.forget_lsns()

    def forget_lsns(self) -> None:
        """The floor becomes unknown until a primary reading begun after now."""
        self.lsn_floor = None
        self.drops += 1

    def note_primary_lsn(self, lsn: int, drops_before: int) -> None:
        """A primary `pg_current_wal_lsn()` reading, sent when `drops` was
        `drops_before`: it sets an unknown floor unless the floor was forgotten
        again since (then it may predate a write whose invalidation was missed)."""
        if self.lsn_floor is None and self.drops == drops_before:
            self.lsn_floor = lsn

    def required_lsn(self, scope: str) -> int | None:
        """A WAL position at or after every write to `scope` whose invalidation
        was applied here (with the floor: also every write before the last
        drop_all); None when unknown."""
        floor = self.lsn_floor
        if floor is None:
            return None
        lsn = self.scope_lsn.get(scope)
        return floor if lsn is None or lsn < floor else lsn
