"""Admission on second access: a key is cached only once it has been asked for
twice recently (the doorkeeper of TinyLFU; CDNs' cache-on-second-hit).

A walk where nothing repeats (issue 21's cold reads) then skips every fill,
eviction and single-flight entry, which cost it a fifth to a third of its
rate; a key read twice is cached from its second miss on, so hot reads keep
their hits (docs/decisions/0039).

Invariants:

* Only ever skips work that is always correct to skip: a fill (local tier or
  Redis) and joining or starting a shared load. It never answers a read.
* Bounded memory: at most 2 x `capacity` fingerprints. When the current set
  is full it becomes the previous one and a new set starts, so a key counts
  as seen for between one and two periods of `capacity` first misses.
* A fingerprint collision only admits a key one miss early.
"""

from __future__ import annotations

# First misses remembered per period: at 2,000 cold reads a second, a key
# read again within about 30 s is admitted.
DOORKEEPER_CAPACITY = 65_536


class Doorkeeper:
    """Which (scope, key) pairs missed recently, by fingerprint."""

    __slots__ = ("_capacity", "_current", "_previous")

    def __init__(self, capacity: int = DOORKEEPER_CAPACITY) -> None:
        self._capacity = capacity
        self._current: set[int] = set()
        self._previous: set[int] = set()

    def admit(self, scope: str, key: str) -> bool:
        """Whether (scope, key) missed before, within the last one or two
        periods; records this miss either way."""
        fingerprint = hash((scope, key))
        current = self._current
        if fingerprint in current:
            return True
        current.add(fingerprint)
        if fingerprint in self._previous:
            return True
        if len(current) >= self._capacity:
            self._previous = current
            self._current = set()
        return False

    def clear(self) -> None:
        """Forget every miss (tests; never needed for correctness)."""
        self._current.clear()
        self._previous.clear()
