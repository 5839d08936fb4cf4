"""A real nginx, rendered from the settings, in front of two real reviews
instances (subprocesses on the test database and the tests' Redis). Overview
and qa get ports where nothing listens: their routes answer the gateway's 502."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisServer, free_port
from tests.gateway.harness import Gateway, ServiceInstance, free_instance_base, gateway_env

INSTANCES = 2


@pytest.fixture(scope="module")
def reviews_instances(
    reviews_db: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceInstance]]:
    base = free_instance_base(INSTANCES)
    logs = tmp_path_factory.mktemp("reviews-logs")
    env = {
        "REVIEWS_DATABASE_URL": reviews_db,
        "REDIS_URL": redis_server.url,
        "ACCESS_LOG": "1",  # the tests read the X-Request-Id the service logged
        "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "4",
    }
    instances = [
        ServiceInstance("reviews", base + 100 * i, env, logs / f"reviews-{i}.log")
        for i in range(INSTANCES)
    ]
    try:
        for instance in instances:  # start together, then wait: half the setup time
            instance.start(wait=False)
        for instance in instances:
            instance.wait_ready()
        yield instances
    finally:
        for instance in instances:
            instance.stop()


def start_gateway(run_dir: Path, reviews_base: int, **extra: str) -> Gateway:
    env = gateway_env(
        {"reviews": reviews_base, "overview": free_port(), "qa": free_port()},
        INSTANCES,
        **extra,
    )
    gateway = Gateway(run_dir, env)
    gateway.start()
    return gateway


@pytest.fixture(scope="module")
def gateway(
    reviews_instances: list[ServiceInstance], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    # Rate limiting stays on (the config with limits is what is tested) but
    # high enough that these tests never meet it; test_rate_limit has its own.
    gw = start_gateway(
        tmp_path_factory.mktemp("gateway"),
        reviews_instances[0].port,
        GATEWAY_RATE="1000",
        GATEWAY_BURST="1000",
    )
    yield gw
    gw.stop()
