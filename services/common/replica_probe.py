"""What the replica monitor (services/common/replicas.py) keeps per server: a
probe connection of its own, each replica's known replay position and lag,
and their exposition (runway_db_replica_up, _lag_seconds, _lag_bytes)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .fair_pool import FairPool
    from .replicas import ReplicaRouter

PRIMARY_LSN_SQL = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8"
REPLAY_LSN_SQL = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8"

MONITOR_INTERVAL_S = 0.1
PROBE_TIMEOUT_S = 0.5
HISTORY = 100  # primary readings kept for the lag: 10 s at MONITOR_INTERVAL_S


@dataclass(slots=True, eq=False)
class ReplicaState:
    url: str
    label: str  # host:port/database, for logs and metrics
    pool: asyncpg.Pool | None = None
    fair: FairPool | None = None  # the pool, first come, first served
    probe: Probe | None = None
    up: bool = False
    fresh: bool = False  # within the lag bound
    replay: int = -1  # the known replay LSN (a lower bound)
    lag_s: float = math.inf
    lag_bytes: int = 0
    # The bounds of the reads running on it (replicas.py expires them when it
    # is marked down).
    in_flight: set[asyncio.Timeout] = field(default_factory=set)


class Probe:
    """The monitor's own connection to one server (never a pool's: a busy
    pool must not stall the monitor), reconnected after any failure.
    statement_cache_size=0: it may go through PgBouncer in transaction mode."""

    def __init__(self, url: str, application_name: str) -> None:
        self.url = url
        self._name = application_name
        self.conn: asyncpg.Connection | None = None

    async def fetchval(self, sql: str) -> tuple[Any, bool]:
        """The value, and whether this call had to (re)connect; within
        PROBE_TIMEOUT_S, else TimeoutError (the connection is then dropped)."""
        connected = False
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                if self.conn is None or self.conn.is_closed():
                    connected = True
                    self.conn = await asyncpg.connect(
                        self.url,
                        timeout=PROBE_TIMEOUT_S,
                        statement_cache_size=0,
                        server_settings={"application_name": self._name},
                    )
                return await self.conn.fetchval(sql), connected
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None


async def no_reset(conn: asyncpg.Connection) -> None:
    """As db.py's pool: handlers leave no session state behind."""


def label(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


class ReplicaCollector:
    """Each replica's state at scrape time: up, lag in seconds and bytes."""

    def __init__(self, router: ReplicaRouter) -> None:
        self._router = router

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        up, lag_s, lag_bytes = self._families()
        for r in self._router.replicas:
            up.add_metric([r.label], 1.0 if r.up else 0.0)
            lag_s.add_metric([r.label], r.lag_s if r.up else math.inf)
            lag_bytes.add_metric([r.label], float(r.lag_bytes))
        return iter((up, lag_s, lag_bytes))

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "runway_db_replica_up", "Whether the replica answers", labels=["replica"]
            ),
            GaugeMetricFamily(
                "runway_db_replica_lag_seconds",
                "How long ago the primary was where the replica has replayed to",
                labels=["replica"],
            ),
            GaugeMetricFamily(
                "runway_db_replica_lag_bytes",
                "WAL between the primary's last reading and the replica's replay position",
                labels=["replica"],
            ),
        )
