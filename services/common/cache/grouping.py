"""Invalidations sent to Redis in groups, as a database commits in groups.

One Redis call per write cost a writer process more CPU than its SQL did
(redis-py's command path, the script call, the message every process hears):
decision 0038. Instead, at most one invalidation call is in flight per
process, and the writes that commit while it runs go out together in the
next one, the moment it ends. A lone write waits for nothing extra; under
concurrent writes one call carries many, so the cost per write falls as the
write rate rises.

Invariants:

* A caller's scopes go out in a Redis call that starts after its `submit()`,
  and `submit()` returns that call's outcome: True only when Redis took the
  scopes' new tokens and the message (coherence.py's guarantee, per write,
  is unchanged).
* A group carries the largest LSN of its writes: a reader that finds the
  group's token loads at or past every write in it (later is safe, earlier
  would not be). Without replicas no write has one and neither has the group.
* Every submitter is answered, whatever the call raises; a cancelled submitter
  does not cancel the call the others wait on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

Send = Callable[[list[str], int | None], Awaitable[bool]]


class InvalidationGroups:
    """Funnels concurrent invalidations into one call at a time (`send`)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._scopes: dict[str, None] = {}  # the next group's scopes, in order
        self._lsn: int | None = None
        self._waiter: asyncio.Future[bool] | None = None  # the next group's outcome
        self._sender: asyncio.Task[None] | None = None
        self.calls = 0  # groups sent (for tests and the benchmark)
        self.writes = 0  # submissions

    async def submit(self, scopes: Sequence[str], lsn: int | None) -> bool:
        """Invalidate `scopes` (at the write position `lsn`, None without
        replicas) with the next group; returns whether Redis took it."""
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
            self._scopes = {}
            self._lsn = None
        self._scopes.update(dict.fromkeys(scopes))
        if lsn is not None and (self._lsn is None or lsn > self._lsn):
            self._lsn = lsn
        self.writes += 1
        waiter = self._waiter
        if self._sender is None:
            # Started on the next loop turn: writes committing in this one join.
            self._sender = asyncio.create_task(self._run(), name="cache-invalidate")
        return await asyncio.shield(waiter)

    async def _run(self) -> None:
        try:
            while self._waiter is not None:
                waiter, scopes, lsn = self._waiter, list(self._scopes), self._lsn
                self._waiter = None  # later submitters form the next group
                self.calls += 1
                try:
                    taken = await self._send(scopes, lsn)
                except asyncio.CancelledError:
                    waiter.cancel()
                    raise
                except Exception as exc:
                    waiter.set_exception(exc)
                    waiter.exception()  # retrieved: shielded submitters may be gone
                    continue
                waiter.set_result(taken)
        finally:
            self._sender = None
            waiter = self._waiter
            if waiter is not None and not waiter.done():  # cancelled with a group queued
                self._waiter = None
                waiter.cancel()
