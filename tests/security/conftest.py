"""The public surface for the abuse tests: one instance of every service
(under supervisord, on databases of this suite's own and the tests' Redis) and
a gateway in front with rate limiting off, since all the traffic comes from
one address; the rate-limit tests start gateways of their own."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from services.common import settings as cfg
from services.common.db import drop_database
from tests.conftest import RedisServer, free_port
from tests.gateway.harness import Gateway, ServiceInstance
from tests.photos.conftest import store_directory
from tests.reliability.harness import Cluster, fresh_database
from tests.reliability.workloads import Overview

# Characteristics of product 1 (reviews), for bodies that name them.
CHARACTERISTICS = ("Fit", "Length", "Comfort")


@dataclass
class Surface:
    cluster: Cluster
    gateway: Gateway
    not_ready: dict[str, str]

    @property
    def port(self) -> int:
        return self.gateway.port

    def require(self, service: str) -> None:
        if service in self.not_ready:
            pytest.fail(self.not_ready[service])

    def dsn(self, service: str) -> str:
        return self.cluster.databases[service]


async def _seed(databases: dict[str, str]) -> None:
    if "overview" in databases:
        await Overview().seed("", databases["overview"])
    if "reviews" in databases:
        conn = await asyncpg.connect(databases["reviews"])
        try:
            for name in CHARACTERISTICS:
                await conn.execute(
                    "INSERT INTO characteristics (product_id, name) VALUES (1, $1)", name
                )
        finally:
            await conn.close()


def photos_instance(logs: Path) -> ServiceInstance:
    env = {"PHOTOS_DIR": str(store_directory())}
    return ServiceInstance("photos", free_port(), env, logs / "photos.log")


@pytest.fixture(scope="session")
def surface(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Surface]:
    databases = {s: fresh_database(s, "sec") for s in cfg.SERVICES}
    cluster = Cluster(tmp_path_factory.mktemp("surface"), databases, redis_server.url, instances=1)
    photos: ServiceInstance | None = None
    try:
        asyncio.run(_seed(databases))
        cluster.start()
        not_ready = cluster.wait_ready()
        # The photos service (no database): one instance on a store of its own.
        photos = photos_instance(tmp_path_factory.mktemp("photos-logs"))
        photos.start()
        photos_env = {"PHOTOS_PORT": str(photos.port), "PHOTOS_DIR": photos.env["PHOTOS_DIR"]}
        gateway = cluster.start_gateway(GATEWAY_RATE_LIMIT="off", **photos_env)
        yield Surface(cluster, gateway, not_ready)
    finally:
        if photos is not None:
            photos.stop()
            shutil.rmtree(photos.env["PHOTOS_DIR"], ignore_errors=True)
        cluster.stop()
        for url in databases.values():
            asyncio.run(drop_database(url))
