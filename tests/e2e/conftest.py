"""The whole stack as `make up` starts it (infra/stack.py: migrations, demo data,
two instances of each service, nginx, Prometheus, all under supervisord), but
on test databases (runway_e2e_<service>), the tests' own Redis and free ports,
so it never collides with a running `make up`. A failure to come up is an error."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.stack import process_alive
from services.common import settings as cfg
from tests.conftest import PG_ADMIN_URL, POOLER_ENABLED, ROOT, RedisServer, free_port
from tests.gateway.harness import free_instance_base

INSTANCES = 2
# Demo data is generated once into run/ and reused (the stack regenerates it
# only when the directory has no CSV files); the databases are new every run.
DEMO_SCALE = "0.0005"  # a few hundred products: enough for every route, quick to load
DATA_DIR = ROOT / "run" / f"e2e-data-{DEMO_SCALE}"


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]
    run_dir: Path

    @property
    def gateway(self) -> int:
        return int(self.env["GATEWAY_PORT"])

    def instance_ports(self, service: str) -> list[int]:
        return cfg.instance_ports(service, self.env)

    def supervisorctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(Path(sys.executable).parent / "supervisorctl"),
                "-c",
                str(self.run_dir / "supervisord.conf"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )


def e2e_database_url(service: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/runway_e2e_{service}"


def stack_env(run_dir: Path, redis_url: str) -> dict[str, str]:
    env = {
        "RUNWAY_RUN_DIR": str(run_dir),
        "RUNWAY_DATA_DIR": str(DATA_DIR),
        "DEMO_SCALE": DEMO_SCALE,
        "REDIS_URL": redis_url,
        "INSTANCES": str(INSTANCES),
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_STATUS_PORT": str(free_port()),
        "PROMETHEUS_PORT": str(free_port()),
        # The exporters (infra/exporters.py) on free ports, reading the tests' Redis.
        "NGINX_EXPORTER_PORT": str(free_port()),
        "REDIS_EXPORTER_PORT": str(free_port()),
        "POSTGRES_EXPORTER_PORT": str(free_port()),
        "POSTGRES_EXPORTER_DSN": PG_ADMIN_URL + "?sslmode=disable",
        # Limits on, high enough for the route tests; test_rate_limit exceeds them.
        "GATEWAY_RATE": "100",
        "GATEWAY_BURST": "200",
        "DB_POOL_MAX": "4",
    }
    for service in cfg.SERVICES:
        env[f"{service.upper()}_PORT"] = str(free_instance_base(INSTANCES))
        env[f"{service.upper()}_DATABASE_URL"] = e2e_database_url(service)
    env["PHOTOS_PORT"] = str(free_instance_base(INSTANCES))  # the photos service: no database
    if POOLER_ENABLED:  # RUNWAY_TEST_POOLER=1: the services behind the stack's PgBouncer
        env |= {"PG_POOLER": "1", "PG_POOLER_PORT": str(free_port())}
    return env


def run_stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.stack", command],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from services.common.db import drop_database

    for service in cfg.SERVICES:
        asyncio.run(drop_database(e2e_database_url(service)))
    run_dir = tmp_path_factory.mktemp("stack")
    env = stack_env(run_dir, redis_server.url)
    up = run_stack("up", env)
    try:
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}\n" + logs(run_dir)
        yield Stack(env, run_dir)
    finally:
        pidfile = run_dir / "supervisord.pid"
        supervisord = int(pidfile.read_text()) if pidfile.exists() else None
        down = run_stack("down", env)
        assert down.returncode == 0, down.stderr
        # `down` returns once supervisord has exited: a `make up` right after
        # must find its socket free.
        assert supervisord is None or not process_alive(supervisord)
        for service in cfg.SERVICES:
            asyncio.run(drop_database(e2e_database_url(service)))


def logs(run_dir: Path) -> str:
    out = []
    for path in sorted((run_dir / "logs").glob("*.log")):
        out.append(f"--- {path.name}\n" + path.read_text()[-2000:])
    return "\n".join(out)
