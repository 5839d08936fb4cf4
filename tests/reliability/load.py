"""A bounded load generator: N concurrent aiohttp workers sending requests a
workload picks, every answer kept with its start and end times (monotonic,
one clock for the whole test) so a test can ask what happened in a window."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: dict | None = None
    headers: dict[str, str] | None = None
    marker: str | None = None  # a unique value a write stores, to find it in the database
    # (table, id) of the row a PUT increments, to check its counter afterwards.
    target: tuple[str, int] | None = None
    expect: tuple[int, ...] = (200,)

    @property
    def is_write(self) -> bool:
        return self.method != "GET"


@dataclass(slots=True)
class Outcome:
    request: Request
    start: float
    end: float
    status: int | None  # None: no HTTP answer (connection error or client timeout)
    content_type: str = ""
    body: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in self.request.expect

    @property
    def latency(self) -> float:
        return self.end - self.start

    def describe(self) -> str:
        what = self.status if self.status is not None else self.error
        return f"{self.request.method} {self.request.path} -> {what} in {self.latency:.3f}s"


async def send(
    session: aiohttp.ClientSession, base: str, request: Request, timeout_s: float
) -> Outcome:
    start = time.monotonic()
    try:
        async with session.request(
            request.method,
            base + request.path,
            json=request.body,
            headers=request.headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            body = await resp.read()
            return Outcome(request, start, time.monotonic(), resp.status, resp.content_type, body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(request, start, time.monotonic(), None, error=repr(exc))


Picker = Callable[[random.Random], Request]


@dataclass
class Load:
    """Runs until stopped: `async with Load(...) as load: ...fault...`; then
    `load.outcomes`. Each worker has its own seeded RNG, so a run can be replayed."""

    bases: list[str]
    pick: Picker
    workers: int = 20
    timeout_s: float = 5.0
    seed: int = 1
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Load:
        connector = aiohttp.TCPConnector(limit=self.workers * 2)
        self._session = aiohttp.ClientSession(connector=connector)
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.workers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        assert self._session is not None
        await self._session.close()

    async def _worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        assert self._session is not None
        while not self._stop.is_set():
            base = self.bases[rng.randrange(len(self.bases))]
            outcome = await send(self._session, base, self.pick(rng), self.timeout_s)
            self.outcomes.append(outcome)


# --- summaries --------------------------------------------------------------------------


def between(outcomes: Iterable[Outcome], start: float, end: float) -> list[Outcome]:
    """Requests that started inside [start, end)."""
    return [o for o in outcomes if start <= o.start < end]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, int(q) - 1)]


def summary(outcomes: list[Outcome]) -> dict[str, object]:
    latencies = [o.latency for o in outcomes]
    return {
        "requests": len(outcomes),
        "writes": sum(o.request.is_write for o in outcomes),
        "failed": sum(not o.ok for o in outcomes),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies, default=0) * 1000, 1),
    }


def failures(outcomes: Iterable[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.ok]


def acknowledged_markers(outcomes: Iterable[Outcome]) -> set[str]:
    return {o.request.marker for o in outcomes if o.ok and o.request.marker}


def acknowledged_updates(outcomes: Iterable[Outcome]) -> dict[tuple[str, int], int]:
    """(table, row id) -> acknowledged increments: a lower bound for the stored counter
    (an unacknowledged one may have been applied too, so there is no upper bound)."""
    counts: dict[tuple[str, int], int] = {}
    for o in outcomes:
        if o.ok and o.request.target is not None:
            counts[o.request.target] = counts.get(o.request.target, 0) + 1
    return counts
