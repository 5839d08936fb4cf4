"""What PgBouncer in transaction mode costs per query, and what it saves in
connections at the primary (docs/decisions/0031-pgbouncer-transaction-mode.md).

    .venv/bin/python -m bench.pooler_cost [--n 20000] [--rounds 3] [--rows 10000] [--shared]

On a private Postgres cluster (initdb on a free port, default settings,
max_connections 100; tests/reliability/pgcluster.py), so nothing else's
connections or buffers count; --shared uses TEST_PG_URL's server instead.

Per-query cost: sequential primary-key reads like the overview's cold read,
`SELECT detail FROM product_documents WHERE product_id = $1`, on a throwaway
database, N per mode, the modes alternating round by round:
  direct        asyncpg over TCP loopback with its statement cache (today's default)
  direct-nocache  the same with statement_cache_size=0 (what DB_POOLER=transaction uses)
  pgbouncer     statement_cache_size=0 through PgBouncer (transaction mode), TCP both legs
Wall time per query, the client's CPU per query (process_time) and PgBouncer's
own CPU per query (/proc/<pid>/stat).

Connections: 2 instances x 3 services, each an asyncpg pool like the services'
(DB_POOL_MIN 2, DB_POOL_MAX 10) driven to its maximum by 16 concurrent 5 ms
queries, counted at the primary in pg_stat_activity, without and with the pooler
(infra/pgbouncer.sizing for that layout).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg
import uvloop

from infra.pgbouncer import PgBouncer, Server, server_of, sizing
from services.common.db import drop_database, with_database
from services.common.migrate import migrate_service

ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
QUERY = "SELECT detail FROM product_documents WHERE product_id = $1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def seed(url: str, rows: int) -> None:
    await drop_database(url)
    await migrate_service("overview", url, env={})
    conn = await asyncpg.connect(url)
    try:
        detail = b'{"id":1,"name":"A product","slogan":"' + b"x" * 600 + b'"}'
        await conn.copy_records_to_table(
            "product_documents",
            records=[(i, detail, b"{}", b"[]") for i in range(1, rows + 1)],
            columns=["product_id", "detail", "styles", "related"],
        )
        await conn.execute("ANALYZE product_documents")
    finally:
        await conn.close()


async def run_mode(url: str, n: int, rows: int, cache: bool) -> tuple[float, float]:
    conn = await asyncpg.connect(url, statement_cache_size=100 if cache else 0)
    try:
        for i in range(200):  # warm up
            await conn.fetchval(QUERY, 1 + i % rows)
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            await conn.fetchval(QUERY, 1 + (i * 7919) % rows)
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await conn.close()


async def per_query(args: argparse.Namespace, direct: str, bouncer: PgBouncer, name: str) -> None:
    modes = {
        "direct": (direct, True),
        "direct-nocache": (direct, False),
        "pgbouncer": (bouncer.url(name), False),
    }
    results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
    pid = bouncer.process.pid
    for r in range(args.rounds):
        order = list(modes) if r % 2 == 0 else list(reversed(modes))
        for mode in order:
            url, cache = modes[mode]
            before = proc_cpu_s(pid)
            wall, cpu = await run_mode(url, args.n, args.rows, cache)
            results[mode].append((wall, cpu, proc_cpu_s(pid) - before))
            print(
                f"round {r + 1} {mode:15} wall {wall / args.n * 1e6:6.1f} us/query"
                f"  client cpu {cpu / args.n * 1e6:6.1f} us/query"
                f"  pgbouncer cpu {results[mode][-1][2] / args.n * 1e6:5.1f} us/query",
                flush=True,
            )
    print("\nmedian of rounds (us per query): wall, client CPU, pgbouncer CPU")
    for mode, rs in results.items():
        med = [statistics.median(x[i] for x in rs) / args.n * 1e6 for i in range(3)]
        print(f"  {mode:15} {med[0]:6.1f} {med[1]:6.1f} {med[2]:5.1f}")


async def drive(pools: list[asyncpg.Pool], seconds: float) -> None:
    async def worker(pool: asyncpg.Pool) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await pool.fetchval("SELECT pg_sleep(0.005)")

    await asyncio.gather(*(worker(p) for p in pools for _ in range(16)))


async def count_at_primary(databases: list[str]) -> int:
    conn = await asyncpg.connect(ADMIN)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1::text[])", databases
        )
    finally:
        await conn.close()


async def connections(bouncer: PgBouncer, names: list[str]) -> None:
    for pooled in (False, True):
        pools = []
        for name in names:
            for _ in range(2):  # two instances of each service
                url = bouncer.url(name) if pooled else with_database(ADMIN, name)
                pools.append(
                    await asyncpg.create_pool(
                        url, min_size=2, max_size=10, statement_cache_size=0 if pooled else 100
                    )
                )
        try:
            idle = await count_at_primary(names)
            task = asyncio.ensure_future(drive(pools, 3.0))
            await asyncio.sleep(2.0)
            busy = await count_at_primary(names)
            await task
            clients = sum(p.get_size() for p in pools)
            print(
                f"{'with pgbouncer' if pooled else 'direct':15} client connections {clients:3}"
                f"  at the primary: idle pools {idle:3}, all pools busy {busy:3}"
            )
        finally:
            for p in pools:
                await p.close()


async def main() -> None:
    global ADMIN
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--shared", action="store_true", help="use TEST_PG_URL's server")
    args = parser.parse_args()
    cluster = None
    if not args.shared:
        from tests.reliability.pgcluster import PgCluster, postgres_bin

        cluster = PgCluster(postgres_bin(15) or postgres_bin())
        cluster.init()
        cluster.start()
        ADMIN = cluster.admin_url
    try:
        await measure(args)
    finally:
        if cluster is not None:
            cluster.destroy()


async def measure(args: argparse.Namespace) -> None:
    name = f"runway_pooler_cost_{os.getpid()}"
    direct = with_database(ADMIN, name)
    names = [f"{name}_{s}" for s in ("overview", "reviews", "qa")]
    await seed(direct, args.rows)
    for other in names:
        await drop_database(with_database(ADMIN, other))
        await migrate_service("overview", with_database(ADMIN, other), env={})
    with tempfile.TemporaryDirectory() as tmp:
        server, _, _ = server_of(ADMIN)
        bouncer = PgBouncer(
            Path(tmp), free_port(), Server(server.host, server.port), size=sizing(2, 3, 10)
        )
        bouncer.start()
        try:
            await per_query(args, direct, bouncer, name)
            print(f"\npgbouncer sizing(2 instances, 3 services, pool max 10): {sizing(2, 3, 10)}")
            await connections(bouncer, names)
        finally:
            bouncer.stop()
            for db in (name, *names):
                await drop_database(with_database(ADMIN, db))


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main())
