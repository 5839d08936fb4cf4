"""One cluster for the fault tests: two instances of every service under
supervisord, on databases of this suite's own and a Redis of its own (the
tests kill and stall it), and a gateway in front with rate limiting off (the
load comes from one address). The services' seed rows are written through
their own APIs where they have one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.common import settings as cfg
from services.common.db import drop_database
from tests.conftest import RedisServer, free_port
from tests.gateway.harness import Gateway
from tests.reliability.harness import Cluster, fresh_database
from tests.reliability.replica_pair import Pair, running_pair
from tests.reliability.workloads import Workload, workload


@dataclass
class FaultStack:
    cluster: Cluster
    redis: RedisServer
    gateway: Gateway
    workloads: dict[str, Workload]
    not_ready: dict[str, str] = field(default_factory=dict)

    def base(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    @property
    def gateway_url(self) -> str:
        return self.base(self.gateway.port)

    def require(self, service: str) -> Workload:
        """The service's workload; fails when the service did not start."""
        if service in self.not_ready:
            pytest.fail(self.not_ready[service])
        return self.workloads[service]

    def dsn(self, service: str) -> str:
        return self.cluster.databases[service]


@pytest.fixture(scope="session")
def fault_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("fault-redis"))
    server.start()
    yield server
    if server.process is not None:
        server.resume()
    server.stop()


def _seed(stack: FaultStack) -> None:
    for service, load in stack.workloads.items():
        if service not in stack.not_ready:
            port = stack.cluster.ports(service)[0]
            asyncio.run(load.seed(stack.base(port), stack.dsn(service)))


@pytest.fixture(scope="session")
def fault_stack(
    fault_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultStack]:
    services = cfg.SERVICES
    databases = {s: fresh_database(s, "faults") for s in services}
    run_dir: Path = tmp_path_factory.mktemp("fault-stack")
    cluster = Cluster(run_dir, databases, fault_redis.url, instances=2)
    try:
        cluster.start()
        not_ready = cluster.wait_ready()
        gateway = cluster.start_gateway(GATEWAY_RATE_LIMIT="off")
        stack = FaultStack(
            cluster, fault_redis, gateway, {s: workload(s) for s in services}, not_ready
        )
        _seed(stack)
        yield stack
    finally:
        cluster.stop()
        for url in databases.values():
            asyncio.run(drop_database(url))


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """A private primary and its delayed streaming replica, one per test module
    (tests/reliability/replica_pair.py)."""
    with running_pair() as made:
        yield made
