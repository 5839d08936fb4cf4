"""Read-through cache of ready-to-send response bytes, in two tiers: a bounded
in-process LRU (hits cost no round trip) over a shared Redis (hits cost one).
DESIGN.md beside this file gives the design and its invariants, each with the
module that upholds it and the test that fails when it breaks:

* ``facade.py``: ``ResponseCache``, the read path and ``flush_namespace``;
* ``local.py``: the local tier (LRU by scope, cost model, invalidation sequences);
* ``flights.py``: single-flight;
* ``redis_tier.py``: batched Redis reads and fills, the adaptive Redis skip;
* ``coherence.py``: invalidations, their replay, the generation;
* ``grouping.py``: invalidations sent to Redis in groups, one call in flight;
* ``lease.py``: the lease and the namespace's beacon;
* ``bus.py``: the invalidation channel's listener;
* ``cluster.py``: the commands on a Redis Cluster (per slot, WAIT);
* ``resilience.py``: deadlines, the breaker, bounded closes;
* ``scripts.py``: the Lua scripts and the key scheme.

The names below are re-exported for importers. A test that patches a
constant must patch it in the module that uses it (e.g. ``redis_tier.FILL_RIDE_S``):
patching the re-export here changes nothing.
"""

from .facade import STOP_TIMEOUT_S, Loader, ResponseCache, flush_namespace
from .lease import BEACON_LOCK_MS, LEASE_S, PING_INTERVAL_S, RECOVERY_GRACE_S
from .local import _SCOPE_SEQ_MAX, ENTRY_OVERHEAD, SCOPE_OVERHEAD
from .redis_tier import (
    _FILL_QUEUE_MAX,
    FILL_RIDE_S,
    REDIS_MIN_HIT_PERCENT,
    REDIS_SAMPLE_EVERY,
    REDIS_WINDOW,
)
from .resilience import (
    _REDIS_FAILURES,
    BREAKER_S,
    CLOSE_TIMEOUT_S,
    POOL_WAIT_S,
    LagTolerantTimeout,
    close_bounded,
    when_a_connection_frees,
)
from .scripts import LuaScript

__all__ = [
    "BEACON_LOCK_MS",
    "BREAKER_S",
    "CLOSE_TIMEOUT_S",
    "ENTRY_OVERHEAD",
    "FILL_RIDE_S",
    "LEASE_S",
    "PING_INTERVAL_S",
    "POOL_WAIT_S",
    "RECOVERY_GRACE_S",
    "REDIS_MIN_HIT_PERCENT",
    "REDIS_SAMPLE_EVERY",
    "REDIS_WINDOW",
    "SCOPE_OVERHEAD",
    "STOP_TIMEOUT_S",
    "_FILL_QUEUE_MAX",
    "_REDIS_FAILURES",
    "_SCOPE_SEQ_MAX",
    "LagTolerantTimeout",
    "Loader",
    "LuaScript",
    "ResponseCache",
    "close_bounded",
    "flush_namespace",
    "when_a_connection_frees",
]
