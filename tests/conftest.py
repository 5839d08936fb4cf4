"""Shared fixtures: a Redis server of the tests' own (so a test may stop it),
throwaway Postgres databases per service, and app/client factories. Nothing
here touches the demo databases or the machine's own Redis.

RUNWAY_TEST_POOLER=1: the apps the tests build reach their databases through a
PgBouncer of the tests' own in transaction mode, as the service's app role
(runway_<service>, DML only) with DB_POOLER=transaction; the databases are
still migrated, seeded and truncated directly."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from importlib import import_module
from pathlib import Path

import asyncpg
import pytest
import redis

from services.common.db import drop_database, with_database
from services.common.migrate import migrate_service
from services.common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# Test servers listen below the kernel's ephemeral range (ip_local_port_range,
# 32768-60999 by default): a port bind(0) hands out lies in that range, and any
# outgoing connection (a pool's, a client's) may take it between the check and
# the server's own bind. CI saw that: a photos instance found its port taken.
PORT_RANGE = (20_000, 32_000)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports this test session has handed out: a port picked for one server is
# never picked again for another, even before the first has bound it (CI saw
# the e2e stack give overview and reviews the same base port: each found its
# port taken by the other and the gateway reached the wrong service). Drawn
# from a generator of their own: a library seeding the global `random` (a
# property-based test does) would make two draws repeat.
_HANDED_OUT: set[int] = set()
_PORTS = random.Random()


def claim_ports(ports: list[int]) -> bool:
    """Hand out `ports` if none was handed out before and each is free now."""
    if any(p in _HANDED_OUT for p in ports) or not all(port_free(p) for p in ports):
        return False
    _HANDED_OUT.update(ports)
    return True


def free_port(span: int = 0, step: int | None = None) -> int:
    """A free port p below the ephemeral range, never handed out before in this
    session, with p + span there too. With `step`, the ports p, p + step, ...
    up to p + span are all handed out (a service's instance ports)."""
    low, high = PORT_RANGE
    for _ in range(500):
        port = _PORTS.randrange(low, high - span)
        ports = [port] if step is None else list(range(port, port + span + 1, step))
        if claim_ports(ports):
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class RedisServer:
    """A redis-server process owned by the tests: it can be stopped, paused and resumed."""

    port: int
    workdir: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(subprocess.signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(subprocess.signal.SIGCONT)

    def flush(self) -> None:
        redis.Redis(port=self.port, socket_timeout=1).flushall()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis for one test that kills or stalls it."""
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.resume()
    server.stop()


def test_database_url(service: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/runway_test_{service}_{os.getpid()}"


def make_database(service: str) -> Iterator[str]:
    """A fresh, migrated database for one service for the whole session."""
    url = test_database_url(service)
    asyncio.run(drop_database(url))
    # The migrate step (services/common/migrate.py), app role included.
    asyncio.run(migrate_service(service, url, env={}))
    yield url
    asyncio.run(drop_database(url))


async def truncate_all(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        tables = [
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'schema_migrations'"
            )
        ]
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
    finally:
        await conn.close()


# RUNWAY_TEST_POOLER=1: the tests' PgBouncer (transaction mode), once started.
POOLER_ENABLED = os.environ.get("RUNWAY_TEST_POOLER", "") not in ("", "0")
_pooler_port: int | None = None


def pooled(service: str, database_url: str) -> str:
    """`database_url`'s database through the tests' PgBouncer, as the app role."""
    assert _pooler_port is not None, "the test_pooler fixture starts the pooler"
    name = database_url.split("?", 1)[0].rsplit("/", 1)[1]
    return with_database(f"postgresql://runway_{service}@127.0.0.1:{_pooler_port}/", name)


@pytest.fixture(scope="session", autouse=True)
def test_pooler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """With RUNWAY_TEST_POOLER=1, a PgBouncer in front of the test Postgres."""
    global _pooler_port
    if not POOLER_ENABLED:
        yield
        return
    from infra.pgbouncer import PgBouncer, server_of

    server, user, password = server_of(PG_ADMIN_URL)
    users = {user: password, **{f"runway_{s}": "" for s in ("overview", "reviews", "qa")}}
    bouncer = PgBouncer(
        tmp_path_factory.mktemp("pgbouncer"),
        free_port(),
        replace(server, dbname=None),
        users=users,
    )
    bouncer.start()
    _pooler_port = bouncer.port
    yield
    _pooler_port = None
    bouncer.stop()


def settings_for(service: str, database_url: str, redis_url: str, **overrides) -> Settings:
    base = Settings.from_env(service, env={})
    # In-process apps cache every miss, so one read sets up a cached page; the
    # default (admission on second access) has tests of its own
    # (tests/common/test_admission.py) and runs in every stack a test starts.
    overrides.setdefault("cache_admit_on_second", False)
    if POOLER_ENABLED and _pooler_port is not None:
        database_url = pooled(service, database_url)
        overrides.setdefault("db_pooler", "transaction")
    return replace(
        base,
        database_url=database_url,
        redis_url=redis_url,
        pool_min=1,
        pool_max=5,
        **overrides,
    )


def database_fixture(service: str) -> Callable[[], Iterator[str]]:
    """The `<service>_db` fixture: the service's migrated test database (URL),
    made once a session when a test first asks for it."""

    @pytest.fixture(scope="session", name=f"{service}_db")
    def database() -> Iterator[str]:
        yield from make_database(service)

    return database


overview_db = database_fixture("overview")
reviews_db = database_fixture("reviews")
qa_db = database_fixture("qa")


@pytest.fixture
def make_settings(redis_server: RedisServer) -> Callable[..., Settings]:
    def factory(service: str, database_url: str, **overrides) -> Settings:
        return settings_for(service, database_url, redis_server.url, **overrides)

    return factory


@pytest.fixture
def service_client(aiohttp_client, redis_server: RedisServer, make_settings) -> Callable:
    """A factory for the services' `<service>_client` fixtures: a test client of
    the service's app on an emptied test database and an empty cache; with
    `wait_cache`, once the app's local cache tier is live; `overrides`:
    Settings fields."""
    from services.common.resources import CACHE

    async def make(service: str, database_url: str, *, wait_cache: bool = False, **overrides):
        await truncate_all(database_url)
        redis_server.flush()
        create_app = import_module(f"services.{service}.app").create_app
        app = create_app(make_settings(service, database_url, **overrides))
        client = await aiohttp_client(app)
        if POOLER_ENABLED:  # through the tests' PgBouncer, as the app role
            from services.common.resources import DB

            assert await app[DB].fetchval("SELECT current_user") == f"runway_{service}"
        if wait_cache:
            assert await app[CACHE].wait_ready()
        return client

    return make


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str], Awaitable[asyncpg.Connection]]]:
    """A factory for the `<service>_conn` fixtures: asyncpg connections to a
    test database, closed after the test."""
    conns: list[asyncpg.Connection] = []

    async def open_connection(database_url: str) -> asyncpg.Connection:
        conns.append(await asyncpg.connect(database_url))
        return conns[-1]

    yield open_connection
    for conn in conns:
        await conn.close()
