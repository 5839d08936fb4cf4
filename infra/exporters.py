"""The exporters for what the services depend on, as supervisord programs of the
local stack (infra/gateway_and_prometheus.py adds them next to nginx and
Prometheus, whose config scrapes them as the jobs `nginx`, `redis`, `postgres`):

    nginx     prometheus-nginx-exporter on 127.0.0.1:NGINX_EXPORTER_PORT (9113),
              reading the gateway's stub_status (GATEWAY_STATUS_PORT)
    redis     prometheus-redis-exporter on 127.0.0.1:REDIS_EXPORTER_PORT (9121),
              reading REDIS_URL (the cache's Redis)
    postgres  prometheus-postgres-exporter on 127.0.0.1:POSTGRES_EXPORTER_PORT (9187),
              reading POSTGRES_EXPORTER_DSN (the local Postgres as postgres; every
              database's pg_stat_database row comes from that one connection),
              and with PG_REPLICAS=1 the stack's replica too (pg_replication_lag)

Debian packages them (prometheus-nginx-exporter 0.11, prometheus-redis-exporter
1.45, prometheus-postgres-exporter 0.11; `make deps` installs them through
infra/ensure-deps.sh). One that is not installed is left out with a message."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra import pg_replica_stack
from services.common import settings as cfg

ProgramFn = Callable[[str, str, dict[str, str], Path], str]


@dataclass(frozen=True)
class Exporter:
    job: str  # the Prometheus job, and the supervisord program's name with "-exporter"
    binary: str
    port_setting: str
    default_port: int

    def port(self, env: Mapping[str, str] = os.environ) -> int:
        raw = env.get(self.port_setting, "").strip()
        return int(raw) if raw else self.default_port

    def path(self) -> str | None:
        found = shutil.which(self.binary)
        if found is None and Path("/usr/bin", self.binary).exists():
            found = str(Path("/usr/bin", self.binary))
        return found


EXPORTERS = (
    Exporter("nginx", "prometheus-nginx-exporter", "NGINX_EXPORTER_PORT", 9113),
    Exporter("redis", "prometheus-redis-exporter", "REDIS_EXPORTER_PORT", 9121),
    Exporter("postgres", "prometheus-postgres-exporter", "POSTGRES_EXPORTER_PORT", 9187),
)
JOBS = tuple(e.job for e in EXPORTERS)
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable"
# Replication lag, which the exporter's built-in queries no longer include.
PG_QUERIES = Path(__file__).resolve().parent / "prometheus" / "postgres-queries.yaml"


def postgres_dsns(env: Mapping[str, str] = os.environ) -> list[str]:
    dsns = [env.get("POSTGRES_EXPORTER_DSN") or DEFAULT_PG_DSN]
    if pg_replica_stack.enabled(env):
        dsns.append(
            f"postgresql://postgres@127.0.0.1:{pg_replica_stack.stack_port(env)}/postgres?sslmode=disable"
        )
    return dsns


def command(
    exporter: Exporter, binary: str, env: Mapping[str, str] = os.environ
) -> tuple[list[str], dict[str, str]]:
    """The exporter's argv and the environment it needs on top of the stack's."""
    listen = f"127.0.0.1:{exporter.port(env)}"
    if exporter.job == "nginx":
        status = f"http://127.0.0.1:{cfg.gateway_status_port(env)}/nginx_status"
        # Retries at start: supervisord starts it beside nginx, which may not listen yet.
        argv = [binary, f"-nginx.scrape-uri={status}", f"-web.listen-address={listen}"]
        return [*argv, "-nginx.retries=10", "-nginx.retry-interval=1s"], {}
    if exporter.job == "redis":
        redis_url = env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        return [binary, f"-redis.addr={redis_url}", f"-web.listen-address={listen}"], {}
    # postgres: the DSNs through the environment, never on the command line.
    argv = [binary, f"--web.listen-address={listen}", f"--extend.query-path={PG_QUERIES}"]
    return argv, {"DATA_SOURCE_NAME": ",".join(postgres_dsns(env))}


def targets(env: Mapping[str, str] = os.environ) -> dict[str, list[str]]:
    """Prometheus's static targets per exporter job (installed or not: a missing
    exporter shows as a target down, which is what it is)."""
    return {e.job: [f"127.0.0.1:{e.port(env)}"] for e in EXPORTERS}


def programs(
    run_dir: Path, program_fn: ProgramFn, env: Mapping[str, str] = os.environ
) -> list[str]:
    logs = run_dir / "logs"
    sections = []
    missing = []
    for exporter in EXPORTERS:
        binary = exporter.path()
        if binary is None:
            missing.append(exporter.binary)
            continue
        argv, extra = command(exporter, binary, env)
        name = f"{exporter.job}-exporter"
        sections.append(program_fn(name, shlex.join(argv), extra, logs / f"{name}.log"))
    if missing:
        print(f"[stack] not installed (make deps installs them): {', '.join(missing)}")
    return sections
