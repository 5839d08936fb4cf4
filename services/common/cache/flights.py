"""Single-flight: concurrent misses on one key in one process share one load.

Invariant: a reader joins only a load that began after this process applied
every invalidation of the key's scope: dropping a scope (or all) forgets its
loads under way, so readers after a write start their own. Joining at all is
the caller's choice, and facade.py joins only under a live lease: without one
this process may not have applied an invalidation older than LEASE_S.

Synchronous bookkeeping only: the caller awaits the load and settles the
future (an extra coroutine here would cost every miss an allocation).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

Flight = asyncio.Future[tuple[bytes, str]]


class Flights:
    """The loads under way in this process, by (scope, key)."""

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], Flight] = {}

    def joinable(self, flight_key: tuple[str, str]) -> Flight | None:
        """The load under way for (scope, key), if any."""
        return self._running.get(flight_key)

    def begin(self, flight_key: tuple[str, str]) -> Flight:
        """Register a load for (scope, key): its future, for the caller to settle."""
        future: Flight = asyncio.get_running_loop().create_future()
        self._running[flight_key] = future
        return future

    def end(self, flight_key: tuple[str, str], future: Flight) -> None:
        """The load behind `future` is over: unregister it unless a drop already did."""
        if self._running.get(flight_key) is future:
            del self._running[flight_key]

    def drop(self, scopes: Iterable[str]) -> None:
        """Later readers of these scopes must not join a load begun before now."""
        for scope in scopes:
            for flight_key in [k for k in self._running if k[0] == scope]:
                del self._running[flight_key]

    def clear(self) -> None:
        """Later readers must not join any load begun before now."""
        self._running.clear()

    def __len__(self) -> int:
        return len(self._running)
