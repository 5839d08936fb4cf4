"""Where the benchmark runs: ports, databases, Redis, directories and durations.

The benchmark stack is the `make up` stack (infra/stack.py, the same
supervisord programs and gateway) with its own run directory, ports, Redis
and databases, so that a benchmark never clobbers a developer's stack or
demo data, and the Redis and Postgres it measures serve only its own load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from infra import redis_cluster
from infra.stack import local_postgres_url
from services.common import settings as svc_settings
from services.photos import settings as photos_settings

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
LUA_DIR = BENCH_DIR / "lua"
PYTHON = str(ROOT / ".venv" / "bin" / "python")


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds per phase."""

    ceiling: int
    warmup: int
    read: int
    write: int
    w4: int
    soak: int
    soak_sample: int  # the soak's sampling interval (a minute in the full run)
    # W1 against ceiling-bare back to back (run.paired_rounds): rounds of
    # pair_ceiling seconds of the ceiling, then pair_read seconds of W1.
    pair_rounds: int
    pair_ceiling: int
    pair_read: int


FULL = Durations(
    ceiling=30,
    warmup=20,
    read=60,
    write=60,
    w4=60,
    soak=600,
    soak_sample=60,
    pair_rounds=5,
    pair_ceiling=8,
    pair_read=16,
)
QUICK = Durations(
    ceiling=5,
    warmup=3,
    read=8,
    write=8,
    w4=5,
    soak=60,
    soak_sample=6,
    pair_rounds=3,
    pair_ceiling=3,
    pair_read=5,
)


# --redis-cluster: the harness's own Redis Cluster, 3 primaries + 1 replica
# each, on the single Redis's port + 1..6 (16380-16385 at the default offset)
# with each node's cluster bus on its port + 100 (16480-16485): clear of `make
# up`'s cluster (7000-7005, buses 17000-17005), of the benchmark stack's other
# ports, and below 20000, where the tests pick their free ports
# (tests/conftest.py PORT_RANGE; their clusters take ephemeral ones).
CLUSTER_PRIMARIES = 3
CLUSTER_FIRST_PORT = 6380  # + the port offset
CLUSTER_BUS_STEP = 100


def cluster_ports(port_offset: int) -> tuple[list[int], dict[int, int]]:
    """The benchmark cluster's node ports (the first is the seed) and each
    node's cluster bus port."""
    first = CLUSTER_FIRST_PORT + port_offset
    ports = [first + i for i in range(2 * CLUSTER_PRIMARIES)]
    bus = {port: port + CLUSTER_BUS_STEP for port in ports}
    if ports[0] < 1024 or max(bus.values()) > 65535:
        raise ValueError(f"port offset {port_offset}: cluster ports {ports[0]}-{ports[-1]}")
    return ports, bus


@dataclass(frozen=True, slots=True)
class BenchConfig:
    scale: str  # as typed: it names data/scale-<scale>
    seed: int
    quick: bool
    soak: bool
    services: tuple[str, ...]
    durations: Durations
    threads: int
    connections: int
    w4_rate: int
    soak_rate: int
    port_offset: int
    ceiling_procs: int
    run_id: str
    external_redis: str | None = None  # use this Redis instead of starting one
    redis_cluster: bool = False  # start a 3+3 Redis Cluster instead of one Redis
    base_url: str | None = None  # a gateway already running: start no stack
    keep_up: bool = False
    only: tuple[str, ...] = ()  # workload name prefixes to run (empty: all)
    run_dir: Path = field(default=ROOT / "run" / "bench")
    data_root: Path = field(default=ROOT / "data")
    results_dir: Path = field(default=BENCH_DIR / "results")

    # --- ports and addresses -------------------------------------------------

    def port(self, base: int) -> int:
        return base + self.port_offset

    @property
    def redis_port(self) -> int:
        return self.port(6379)

    @property
    def redis_socket(self) -> Path:
        return self.run_dir / "redis" / "redis.sock"

    @property
    def redis_url(self) -> str:
        """The services reach the Redis the harness starts through its Unix socket:
        it shares their host, and a socket round trip costs both ends less CPU
        than one over TCP loopback (docs/decisions/0026-unix-sockets-for-postgres-and-redis.md).
        A cluster's seed node over TCP: a cluster client goes on to the
        addresses the nodes announce, which are TCP ones."""
        if self.redis_cluster:
            return redis_cluster.seed_url(self.redis_cluster_ports[0])
        if self.external_redis:
            return self.external_redis
        if os.environ.get("BENCH_TCP"):
            return f"redis://127.0.0.1:{self.redis_port}/0"
        return f"unix://{self.redis_socket}?db=0"

    @property
    def redis_cluster_ports(self) -> list[int]:
        return cluster_ports(self.port_offset)[0]

    @property
    def redis_kind(self) -> str:
        """Which Redis the run measured, as its results record it."""
        if self.base_url:
            return "the running stack's (--base-url)"
        if self.redis_cluster:
            return f"cluster {CLUSTER_PRIMARIES}+{CLUSTER_PRIMARIES}"
        return "external" if self.external_redis else "single"

    @property
    def gateway_url(self) -> str:
        return self.base_url or f"http://127.0.0.1:{self.port(svc_settings.GATEWAY_PORT)}"

    @property
    def ceiling_nginx_port(self) -> int:
        return self.port(8090)

    @property
    def ceiling_bare_port(self) -> int:
        return self.port(8091)

    @property
    def ceiling_query_port(self) -> int:
        return self.port(8092)

    def database_url(self, service: str) -> str:
        override = os.environ.get(f"BENCH_{service.upper()}_DATABASE_URL")
        if override:
            return override
        if os.environ.get("BENCH_TCP"):  # the A/B of the sockets (docs/decisions/0026-*)
            return f"postgresql://postgres@127.0.0.1:5432/atelier_{service}_bench"
        return local_postgres_url(f"atelier_{service}_bench")

    def stack_env(self) -> dict[str, str]:
        """The environment infra/stack.py and the services read (see settings.py)."""
        env = {
            "RUNWAY_RUN_DIR": str(self.run_dir / "stack"),
            "RUNWAY_DATA_DIR": str(self.data_root),
            "REDIS_URL": self.redis_url,
            # Set either way, so a REDIS_CLUSTER=1 left in the shell by `make up`
            # does not point the benchmark's services at that cluster.
            "REDIS_CLUSTER": "1" if self.redis_cluster else "0",
            "GATEWAY_PORT": str(self.port(svc_settings.GATEWAY_PORT)),
            "GATEWAY_STATUS_PORT": str(self.port(svc_settings.GATEWAY_STATUS_PORT)),
            # The benchmark is one client sending thousands of requests a second.
            "GATEWAY_RATE_LIMIT": "off",
            # The harness scrapes the services itself; Prometheus would only add load.
            "PROMETHEUS_PORT": "off",
            # The stack runs the photos service too (idle here): off the usual port.
            "PHOTOS_PORT": str(self.port(photos_settings.BASE_PORT)),
        }
        if self.redis_cluster:
            # infra.stack derives the services' REDIS_URL from it (the seed);
            # bench/stackup.py keeps it from starting nodes of its own.
            env["REDIS_CLUSTER_PORT"] = str(self.redis_cluster_ports[0])
        for service in svc_settings.SERVICES:
            env[f"{service.upper()}_PORT"] = str(self.port(svc_settings.BASE_PORTS[service]))
            env[f"{service.upper()}_DATABASE_URL"] = self.database_url(service)
        return env

    def instance_ports(self, service: str) -> list[int]:
        return svc_settings.instance_ports(service, {**os.environ, **self.stack_env()})

    # --- directories ----------------------------------------------------------

    def data_dir(self, service: str) -> Path:
        return self.data_root / f"scale-{self.scale}" / service

    def report_dir(self, service: str) -> Path:
        return self.data_root / f"scale-{self.scale}" / "reports" / service

    @property
    def ids_dir(self) -> Path:
        return self.run_dir / "ids"

    @property
    def raw_dir(self) -> Path:
        return self.results_dir / "raw" / self.run_id
