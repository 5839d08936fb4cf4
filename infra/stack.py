"""The local stack under supervisord: `up` prepares each service's database
(migrations, plus a generated demo dataset when it is empty), writes the
supervisord config from the same settings the services read, starts it and
waits until every instance is ready; `down` stops everything; `status` shows it.

    python -m infra.stack up|down|status [--only reviews,qa]

PG_REPLICAS=1 adds a streaming replica of the local Postgres (infra/pg_replica_stack.py),
PG_POOLER=1 PgBouncer in transaction mode in front of it (infra/pgbouncer.py),
REDIS_CLUSTER=1 a Redis Cluster of 3 primaries + 3 replicas on 7000-7005 for the
services' cache (infra/redis_cluster_stack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from infra import (
    gateway_and_prometheus,
    pg_replica_stack,
    pgbouncer,
    photos_program,
    redis_cluster_stack,
)
from infra.probe import http_status
from services.common import settings as cfg
from services.common.migrate import app_role, migrate_service, migrate_summary

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = Path(os.environ.get("RUNWAY_RUN_DIR", ROOT / "run"))
DATA_DIR = Path(os.environ.get("RUNWAY_DATA_DIR", ROOT / "data"))
DEMO_SCALE = float(os.environ.get("DEMO_SCALE", "0.002"))
PYTHON = sys.executable


# Where Debian's and most other builds of Postgres put the local socket.
PG_SOCKET_DIRS = ("/run/postgresql", "/var/run/postgresql", "/tmp")
PG_PORT = 5432


def _socket_answers(directory: str) -> bool:
    """Whether user postgres gets in through the socket without a password (a
    socket may ask for peer or password authentication where TCP trusts).
    psql, not asyncpg: callable whether or not an event loop is running."""
    if not Path(directory, f".s.PGSQL.{PG_PORT}").exists() or shutil.which("psql") is None:
        return False
    probe = ["psql", "-w", "-h", directory, "-p", str(PG_PORT), "-U", "postgres"]
    probe += ["-d", "postgres", "-Atqc", "SELECT 1"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@functools.cache
def _local_socket_dir() -> str | None:
    return next((d for d in PG_SOCKET_DIRS if _socket_answers(d)), None)


def local_postgres_url(database: str) -> str:
    """`database` on the Postgres of this host: through its Unix socket when
    one answers as user postgres, else over TCP loopback. A socket round trip
    costs the service and its Postgres backend less CPU than one through the
    TCP stack (docs/decisions/0026-unix-sockets-for-postgres-and-redis.md).
    Containers set their URLs."""
    directory = _local_socket_dir()
    if directory is None:
        return f"postgresql://postgres@127.0.0.1:{PG_PORT}/{database}"
    return f"postgresql://postgres@/{database}?host={directory}"


def service_database_url(service: str) -> str:
    """The URL the environment gives the service, else its local database."""
    if os.environ.get(f"{service.upper()}_DATABASE_URL") or os.environ.get("DATABASE_URL"):
        return cfg.database_url(service)
    return local_postgres_url(f"atelier_{service}")


def _supervisor_paths() -> tuple[Path, Path]:
    return RUN_DIR / "supervisord.conf", RUN_DIR / "supervisor.sock"


def _program(name: str, command: str, env: dict[str, str], log: Path) -> str:
    environment = ",".join(f'{k}="{v}"' for k, v in env.items())
    return f"""
[program:{name}]
command={command}
directory={ROOT}
environment={environment}
autostart=true
autorestart=true
startsecs=1
startretries=10
stopsignal=TERM
stopwaitsecs=15
redirect_stderr=true
stdout_logfile={log}
stdout_logfile_maxbytes=20MB
stdout_logfile_backups=2
"""


def service_programs(services: list[str]) -> list[str]:
    programs = []
    for service in services:
        for i, port in enumerate(cfg.instance_ports(service)):
            url = service_database_url(service)
            env = {
                "PORT": str(port),
                "PYTHONUNBUFFERED": "1",
                f"{service.upper()}_DATABASE_URL": url,
            }
            # PG_REPLICAS=1: <SERVICE>_REPLICA_URLS; PG_POOLER=1: the URL through
            # PgBouncer, the direct one as <SERVICE>_MIGRATE_DATABASE_URL, DB_POOLER.
            env |= pg_replica_stack.service_env(service, url) | pgbouncer.service_env(service, url)
            env |= redis_cluster_stack.service_env()  # REDIS_CLUSTER=1: REDIS_URL is a seed node
            if pgbouncer.enabled():
                # As the app role: behind the pooler its timeouts are that role's
                # settings (services/common/migrate.py), not startup parameters.
                role = app_role(service).name
                pooled = urlsplit(pgbouncer.pooled_url(url))
                netloc = f"{role}@{pooled.netloc.rsplit('@', 1)[-1]}"
                env[f"{service.upper()}_DATABASE_URL"] = urlunsplit(pooled._replace(netloc=netloc))
            programs.append(
                _program(
                    f"{service}-{i}",
                    f"{PYTHON} -m services.{service}.app",
                    env,
                    RUN_DIR / "logs" / f"{service}-{i}.log",
                )
            )
    return programs


def write_config(services: list[str]) -> Path:
    conf, sock = _supervisor_paths()
    (RUN_DIR / "logs").mkdir(parents=True, exist_ok=True)
    header = f"""
[unix_http_server]
file={sock}

[supervisord]
logfile={RUN_DIR / "logs" / "supervisord.log"}
pidfile={RUN_DIR / "supervisord.pid"}
childlogdir={RUN_DIR / "logs"}
nodaemon=false

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{sock}
"""
    edge = gateway_and_prometheus.programs(RUN_DIR, _program)
    urls = {s: service_database_url(s) for s in services}
    pooler = pgbouncer.programs(RUN_DIR, _program, local_postgres_url("postgres"), urls)
    photos = photos_program.programs(RUN_DIR, _program)  # uploads (services/photos)
    cluster = redis_cluster_stack.programs(RUN_DIR, _program)  # REDIS_CLUSTER=1
    conf.write_text(header + "".join(cluster + pooler + service_programs(services) + photos + edge))
    return conf


def _bin(name: str) -> str:
    return str(Path(PYTHON).parent / name)


def supervisorctl(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    conf, _ = _supervisor_paths()
    return subprocess.run(
        [_bin("supervisorctl"), "-c", str(conf), *args],
        capture_output=True,
        text=True,
        check=check,
    )


def running() -> bool:
    conf, sock = _supervisor_paths()
    return conf.exists() and sock.exists() and supervisorctl("pid").returncode == 0


async def _is_empty(dsn: str, table: str) -> bool:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})")
    finally:
        await conn.close()


def prepare(service: str) -> None:
    """The migrate step (services/common/migrate.py: database, migrations, app
    role), through <SERVICE>_MIGRATE_DATABASE_URL when set; then generate and
    load the demo data when the database is empty."""
    from services.overview.data import generator as overview_generator
    from services.overview.data import loader as overview_loader
    from services.qa.data import generator as qa_generator
    from services.qa.data import loader as qa_loader
    from services.reviews.data import generator as reviews_generator
    from services.reviews.data import loader as reviews_loader

    loader, generator = {
        "overview": (overview_loader, overview_generator),
        "reviews": (reviews_loader, reviews_generator),
        "qa": (qa_loader, qa_generator),
    }[service]
    dsn = os.environ.get(f"{service.upper()}_MIGRATE_DATABASE_URL") or service_database_url(service)
    print(migrate_summary(asyncio.run(migrate_service(service, dsn))))
    if not asyncio.run(_is_empty(dsn, loader.MAIN_TABLE)):
        return
    data_dir = DATA_DIR / "demo" / service
    if not data_dir.exists() or not any(data_dir.glob("*.csv")):
        print(f"[stack] generating {service} demo data (scale {DEMO_SCALE}) in {data_dir}")
        generator.generate(data_dir, scale=DEMO_SCALE, seed=1)
    print(f"[stack] loading {service} demo data into {dsn}")
    asyncio.run(loader.load(dsn, data_dir, DATA_DIR / "reports" / "demo" / service))


def wait_ready(services: list[str], timeout_s: float = 60) -> None:
    urls = [f"http://127.0.0.1:{port}/readyz" for s in services for port in cfg.instance_ports(s)]
    deadline = time.monotonic() + timeout_s
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        pending = [u for u in pending if http_status(u) != 200]
        if pending:
            time.sleep(0.2)
    if pending:
        print(supervisorctl("status").stdout)
        raise SystemExit(f"[stack] not ready after {timeout_s:.0f}s: {', '.join(pending)}")


def up(services: list[str]) -> None:
    for service in services:
        prepare(service)
    pg_replica_stack.stack_up(RUN_DIR, local_postgres_url("postgres"))  # PG_REPLICAS=1
    if running():
        _shut_down()
    conf = write_config(services)
    subprocess.run([_bin("supervisord"), "-c", str(conf)], check=True)
    pgbouncer.wait_ready()  # PG_POOLER=1
    redis_cluster_stack.stack_up(RUN_DIR)  # REDIS_CLUSTER=1: created once, then re-formed
    wait_ready(services)
    photos_program.wait_ready()
    gateway_and_prometheus.wait_ready()
    print("[stack] up:")
    for s in services:
        for port in cfg.instance_ports(s):
            print(f"  {s:9} http://127.0.0.1:{port}")
    photos_program.print_urls()
    redis_cluster_stack.print_urls()
    gateway_and_prometheus.print_urls()


def down() -> None:
    if running():
        _shut_down()
        print("[stack] stopped")
    else:
        print("[stack] not running")
    pg_replica_stack.stack_down(RUN_DIR)


def _shut_down(timeout_s: float = 30) -> None:
    """Stop supervisord and wait for its process to exit. It stops answering
    supervisorctl as soon as it starts shutting down, but holds its socket
    until every program has stopped: a `make up` right after a `down` that
    only waited for the answers found the socket taken."""
    pidfile = RUN_DIR / "supervisord.pid"
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        pid = None
    supervisorctl("shutdown")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (running() or (pid is not None and process_alive(pid))):
        time.sleep(0.2)


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no socket)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def status() -> None:
    if not running():
        print("[stack] not running")
    else:
        print(supervisorctl("status").stdout, end="")
    pg_replica_stack.stack_status(RUN_DIR, local_postgres_url("postgres"))  # its lag, when one runs
    redis_cluster_stack.stack_status(RUN_DIR)  # cluster_state, slots, primaries/replicas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--only", help="comma-separated services (default: all)")
    args = parser.parse_args()
    services = args.only.split(",") if args.only else list(cfg.SERVICES)
    if args.command == "up":
        if shutil.which(_bin("supervisord")) is None:
            raise SystemExit("supervisord missing: run `make venv`")
        up(services)
    elif args.command == "down":
        down()
    else:
        status()


if __name__ == "__main__":
    main()
