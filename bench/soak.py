"""The soak (issue 7): the W1+W3 mix held at a fixed rate for ten minutes,
watching for leaks. Every interval (a minute in the full run) it samples each
service process's RSS, the Postgres connections per benchmark database
(pg_stat_activity) and Redis's client count (CLIENT LIST; on a cluster,
summed over its nodes); at the end RSS may have grown at most 10% from the
second sample to the last, and connection counts may not have crept up."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import asyncpg
from redis import Redis

from infra import redis_cluster
from services.common.db import database_name

from .config import BenchConfig
from .env import Processes
from .procs import rss_bytes
from .workloads import Result, Workload, measure

RSS_GROWTH = 0.10


async def _pg_connections(cfg: BenchConfig) -> dict[str, int]:
    names = [database_name(cfg.database_url(s)) for s in cfg.services]
    conn = await asyncpg.connect(cfg.database_url(cfg.services[0]), timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT datname, count(*) FROM pg_stat_activity WHERE datname = ANY($1::text[])"
            " GROUP BY datname",
            names,
        )
    finally:
        await conn.close()
    return {name: 0 for name in names} | {r[0]: r[1] for r in rows}


def snapshot(cfg: BenchConfig, env: Processes) -> dict[str, Any]:
    rss = {}
    for label, pid in env.supervisor_pids().items():
        if label.split("-")[0] in cfg.services:
            value = rss_bytes(pid)
            rss[label] = round(value / 2**20, 1) if value else None
    return {
        "rss_mb": rss,
        "pg_connections": asyncio.run(_pg_connections(cfg)),
        "redis_clients": _redis_clients(cfg),
    }


def _redis_clients(cfg: BenchConfig) -> int:
    """Connections to Redis: CLIENT LIST's length, on a cluster summed over
    every node (the services keep connections to each primary they use, and
    the replicas' links are counted on their primaries)."""
    if cfg.redis_cluster:
        clients = [redis_cluster.client(port, 2) for port in cfg.redis_cluster_ports]
    else:
        clients = [Redis.from_url(cfg.redis_url, socket_timeout=2)]
    total = 0
    for client in clients:
        try:
            total += len(client.client_list())
        finally:
            client.close()
    return total


def _check(what: str, first: float | None, last: float | None, limit: float) -> dict[str, Any]:
    ok = first is not None and last is not None and last <= limit
    return {"what": what, "first": first, "last": last, "limit": round(limit, 1), "ok": ok}


def checks(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Second sample (minute 2) against the last (minute 10)."""
    if len(samples) < 3:
        return [_check("samples (need 3)", len(samples), len(samples), 3)]
    base, last = samples[1], samples[-1]
    out = []
    for label, mb in base["rss_mb"].items():
        end = last["rss_mb"].get(label)
        out.append(_check(f"RSS MB {label}", mb, end, (mb or 0) * (1 + RSS_GROWTH)))
    # Pools are bounded, so a leak shows as creep: allow 10% or 2 of jitter.
    for db, n in base["pg_connections"].items():
        end = last["pg_connections"].get(db)
        out.append(_check(f"Postgres connections {db}", n, end, n + max(2, 0.1 * n)))
    n = base["redis_clients"]
    out.append(_check("Redis clients", n, last["redis_clients"], n + max(2, 0.1 * n)))
    return out


def run(cfg: BenchConfig, env: Processes, workload: Workload) -> tuple[Result, dict[str, Any]]:
    """measure() in a thread while this one samples every soak_sample seconds."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = measure(cfg, env, workload)
        except BaseException as exc:  # re-raised below, in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    samples = []
    interval = cfg.durations.soak_sample
    k = 1
    while thread.is_alive():
        if k * interval > workload.duration_s:
            thread.join()
            break
        thread.join(timeout=max(0.0, started + k * interval - time.monotonic()))
        if thread.is_alive():
            samples.append({"t_s": k * interval, **snapshot(cfg, env)})
            k += 1
    if "error" in box:
        raise box["error"]
    soak_checks = checks(samples)
    return box["result"], {"interval_s": interval, "samples": samples, "checks": soak_checks}
