"""How long this process could not run: a watch for a frozen or starved
machine while something is timed.

A daemon thread wakes every TICK_S; a wake later than its tick by more than
THRESHOLD_S counts the lateness as stalled time (a VM paused by its host, a
SIGSTOP, a scheduler that gave the process no CPU, one call holding the GIL).
A failover timed across such a stall measures the machine, not the cluster:
the caller subtracts `stalled_s` from its own figure, extends its deadline by
it, and reports it (infra/redis_cluster_subprocesses.py `kill_primary`).

Invariant: only time in which this thread could not run is counted. Another
thread blocked in a socket call adds nothing, since this one sleeps apart."""

from __future__ import annotations

import threading
import time
from types import TracebackType

TICK_S = 0.01
THRESHOLD_S = 0.25


class StallWatch:
    def __init__(self, tick_s: float = TICK_S, threshold_s: float = THRESHOLD_S) -> None:
        self.tick_s = tick_s
        self.threshold_s = threshold_s
        self._stalled_s = 0.0
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)

    def _late(self, now: float) -> float:
        """How late the tick due after `_last` is at `now`, when over the threshold."""
        late = now - self._last - self.tick_s
        return late if late > self.threshold_s else 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            with self._lock:
                self._stalled_s += self._late(now)
                self._last = now

    @property
    def stalled_s(self) -> float:
        """Stalled so far, counting a stall this thread has not yet woken from
        (a reader that thaws first must not see its deadline pass unexcused)."""
        with self._lock:
            return self._stalled_s + self._late(time.monotonic())

    def __enter__(self) -> StallWatch:
        self._last = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
