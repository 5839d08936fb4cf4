"""The local stack (infra/stack.py) with PG_REPLICAS=1: one replica of the stack's
Postgres under run/pg-replica/, on 127.0.0.1:PG_REPLICA_PORT (5433), delayed by
PG_REPLICA_DELAY_MS (0), made once and reused by later `make up`s while it
still matches the primary (same system identifier, the WAL it needs still on
the primary; else it is made again); started and stopped with pg_ctl next to
supervisord (`make down` stops it). Every service gets
<SERVICE>_REPLICA_URLS=postgresql://<user>@127.0.0.1:5433/<its database>,
straight to the replica, not through PgBouncer. A physical replica copies the
whole cluster: every database on the machine's Postgres (benchmark databases
included) lands in run/pg-replica/.

The replica itself, its lag and the primary's side: infra/pg_replica.py."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from infra.pg_replica import (
    Replica,
    ensure_replication_allowed,
    hot_standby_settings,
    lag,
    postgres_bin,
    server_major,
    wait_replication_allowed,
)
from infra.stack_settings import flag, int_setting

DEFAULT_PORT = 5433


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    return flag(env, "PG_REPLICAS")


def stack_port(env: Mapping[str, str] = os.environ) -> int:
    return int_setting(env, "PG_REPLICA_PORT", DEFAULT_PORT)


def stack_delay_ms(env: Mapping[str, str] = os.environ) -> int:
    return int_setting(env, "PG_REPLICA_DELAY_MS", 0)


def stack_replica(run_dir: Path, env: Mapping[str, str] = os.environ) -> Replica:
    return Replica(run_dir / "pg-replica", stack_port(env), name="runway_stack_replica")


def replica_url(service_url: str, env: Mapping[str, str] = os.environ) -> str:
    """The service's database on the stack's replica: same name and user."""
    parts = urlsplit(service_url)
    user = parts.username or "postgres"
    return f"postgresql://{user}@127.0.0.1:{stack_port(env)}{parts.path}"


def service_env(service: str, direct_url: str, env: Mapping[str, str] = os.environ) -> dict:
    """What a service program gets when the stack runs a replica."""
    if not enabled(env):
        return {}
    return {f"{service.upper()}_REPLICA_URLS": replica_url(direct_url, env)}


def _primary_address(primary_dsn: str) -> tuple[str, int]:
    """Where pg_basebackup reaches the primary: over TCP loopback, which the
    host replication line lets in (a socket URL names the same server)."""
    parts = urlsplit(primary_dsn)
    query = parse_qs(parts.query)
    port = parts.port or int(query.get("port", ["5432"])[0])
    return "127.0.0.1", port


def stack_up(run_dir: Path, primary_dsn: str, env: Mapping[str, str] = os.environ) -> None:
    """PG_REPLICAS=1: the stack's replica, reused when it still fits the
    primary, else made anew; started with the configured delay and streaming.
    Otherwise a replica left running by an earlier `up` is stopped."""
    replica = stack_replica(run_dir, env)
    if not enabled(env):
        stack_down(run_dir, env)
        return
    asyncio.run(_stack_up(replica, primary_dsn, stack_delay_ms(env)))


async def _stack_up(replica: Replica, primary_dsn: str, delay_ms: int) -> None:
    replica.bin_dir = postgres_bin(await server_major(primary_dsn)) or replica.bin_dir
    await ensure_replication_allowed(primary_dsn)
    if replica.running():
        replica.stop()
    host, port = _primary_address(primary_dsn)
    await asyncio.to_thread(wait_replication_allowed, host, port, replica.bin_dir)
    settings = await hot_standby_settings(primary_dsn)
    if await replica.can_reuse(primary_dsn):
        replica.configure(delay_ms=delay_ms, settings=settings)
        try:
            replica.start()
            await replica.wait_streaming(timeout_s=15)
            print(f"[replica] reusing {replica.data} on 127.0.0.1:{replica.port}")
            return
        except (RuntimeError, TimeoutError) as e:
            print(f"[replica] {replica.data} does not catch up ({str(e)[:200]}); making it again")
            if replica.running():
                replica.stop("immediate")
    print(f"[replica] pg_basebackup from {host}:{port} into {replica.data}")
    replica.create(host, port, delay_ms=delay_ms, settings=settings)
    replica.start()
    await replica.wait_streaming()
    print(f"[replica] streaming on 127.0.0.1:{replica.port} (apply delay {delay_ms} ms)")


def stack_down(run_dir: Path, env: Mapping[str, str] = os.environ) -> None:
    replica = stack_replica(run_dir, env)
    if replica.exists() and replica.running():
        replica.stop()
        print("[replica] stopped")


def stack_status(run_dir: Path, primary_dsn: str, env: Mapping[str, str] = os.environ) -> None:
    """`make status`: the replica's lag when one runs."""
    replica = stack_replica(run_dir, env)
    if not (replica.exists() and replica.running()):
        return
    replica.port = replica.running_port() or replica.port
    try:
        reading = asyncio.run(lag(primary_dsn, replica.dsn(), replica.name))
    except (OSError, asyncpg.PostgresError) as e:
        print(f"pg-replica 127.0.0.1:{replica.port}: lag unknown ({e})")
        return
    print(f"pg-replica 127.0.0.1:{replica.port}: {reading.describe()}")
