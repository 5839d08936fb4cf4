"""Typed settings read from the environment: the one source of truth for ports,
instance counts, database URLs and cache tuning (the gateway config, the local
stack and compose.yaml are all generated from or checked against this)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

SERVICES: tuple[str, ...] = ("overview", "reviews", "qa")
BASE_PORTS: dict[str, int] = {"overview": 8001, "reviews": 8002, "qa": 8003}
GATEWAY_PORT = 8080
GATEWAY_STATUS_PORT = 8081
# Instance i of a service listens on its base port + INSTANCE_PORT_STEP * i.
INSTANCE_PORT_STEP = 100


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"setting {name} must be an integer, got {raw!r}") from None


def default_database_url(service: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/atelier_{service}"


def database_url(service: str, env: Mapping[str, str] = os.environ) -> str:
    """The service's own database: <SERVICE>_DATABASE_URL, then DATABASE_URL."""
    return (
        env.get(f"{service.upper()}_DATABASE_URL")
        or env.get("DATABASE_URL")
        or default_database_url(service)
    )


def replica_urls(service: str, env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The service's read replicas: <SERVICE>_REPLICA_URLS, comma-separated
    DSNs (none by default: every read on the primary, services/common/replicas.py)."""
    raw = env.get(f"{service.upper()}_REPLICA_URLS") or ""
    return tuple(url.strip() for url in raw.split(",") if url.strip())


def migrate_database_url(service: str, env: Mapping[str, str] = os.environ) -> str:
    """Where the migrate step connects (services/common/migrate.py): a role
    with CREATEDB and DDL rights, directly to Postgres (never through a
    pooler), <SERVICE>_MIGRATE_DATABASE_URL, else the serving URL."""
    return env.get(f"{service.upper()}_MIGRATE_DATABASE_URL") or database_url(service, env)


# DB_POOLER: what sits between the service and Postgres. "none" (default): a
# direct connection. "transaction": PgBouncer in transaction mode, so no named
# prepared statements and no timeouts as startup parameters (services/common/db.py).
POOLER_MODES = ("none", "transaction")


def db_pooler(env: Mapping[str, str] = os.environ) -> str:
    mode = (env.get("DB_POOLER") or "none").strip().lower()
    if mode not in POOLER_MODES:
        raise SystemExit(f"setting DB_POOLER must be one of {POOLER_MODES}, got {mode!r}")
    return mode


def _admit_on_second(env: Mapping[str, str]) -> bool:
    mode = (env.get("CACHE_ADMIT_ON") or "second").strip().lower()
    if mode not in ("first", "second"):
        raise SystemExit(f"setting CACHE_ADMIT_ON must be first or second, got {mode!r}")
    return mode == "second"


def base_port(service: str, env: Mapping[str, str] = os.environ) -> int:
    return _int(env, f"{service.upper()}_PORT", BASE_PORTS[service])


def instance_count(service: str, env: Mapping[str, str] = os.environ) -> int:
    return max(1, _int(env, f"{service.upper()}_INSTANCES", _int(env, "INSTANCES", 1)))


def instance_ports(service: str, env: Mapping[str, str] = os.environ) -> list[int]:
    first = base_port(service, env)
    return [first + INSTANCE_PORT_STEP * i for i in range(instance_count(service, env))]


def gateway_port(env: Mapping[str, str] = os.environ) -> int:
    return _int(env, "GATEWAY_PORT", GATEWAY_PORT)


def gateway_status_port(env: Mapping[str, str] = os.environ) -> int:
    return _int(env, "GATEWAY_STATUS_PORT", GATEWAY_STATUS_PORT)


@dataclass(frozen=True, slots=True)
class Settings:
    service: str
    host: str
    port: int
    database_url: str
    redis_url: str
    pool_min: int
    pool_max: int
    # Fail fast when Postgres is down: a request gets a 503 within about a second.
    db_connect_timeout_s: float
    db_acquire_timeout_s: float
    statement_timeout_ms: int
    # Redis calls are bounded in milliseconds: a stalled cache must not stall requests.
    redis_timeout_ms: int
    cache_ttl_s: int
    cache_local_max_bytes: int
    cache_enabled: bool
    access_log: bool
    log_level: str
    db_pooler: str = "none"
    # Read replicas (services/common/replicas.py): none by default. One is
    # skipped while it shows the primary as of more than replica_max_lag_ms ago.
    replica_urls: tuple[str, ...] = ()
    replica_max_lag_ms: int = 1000
    # REDIS_CLUSTER=1: REDIS_URL is a seed node of a Redis Cluster
    # (services/common/cache/cluster.py).
    redis_cluster: bool = False
    # CACHE_ADMIT_ON=second (default): a body is cached from its key's second
    # miss on (services/common/cache/admission.py); first: from the first.
    cache_admit_on_second: bool = True

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] = os.environ) -> Settings:
        if service not in BASE_PORTS:
            raise ValueError(f"unknown service {service!r}")
        return cls(
            service=service,
            host=env.get("HOST", "127.0.0.1"),
            port=_int(env, "PORT", base_port(service, env)),
            database_url=database_url(service, env),
            redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            pool_min=_int(env, "DB_POOL_MIN", 2),
            pool_max=_int(env, "DB_POOL_MAX", 10),
            db_connect_timeout_s=_int(env, "DB_CONNECT_TIMEOUT_MS", 1000) / 1000,
            db_acquire_timeout_s=_int(env, "DB_ACQUIRE_TIMEOUT_MS", 3000) / 1000,
            statement_timeout_ms=_int(env, "DB_STATEMENT_TIMEOUT_MS", 5000),
            redis_timeout_ms=_int(env, "REDIS_TIMEOUT_MS", 50),
            cache_ttl_s=_int(env, "CACHE_TTL_S", 300),
            cache_local_max_bytes=_int(env, "CACHE_LOCAL_MAX_BYTES", 64 * 1024 * 1024),
            cache_enabled=env.get("CACHE_ENABLED", "1") not in ("0", "false", "no"),
            access_log=env.get("ACCESS_LOG", "0") in ("1", "true", "yes"),
            log_level=env.get("LOG_LEVEL", "INFO"),
            db_pooler=db_pooler(env),
            replica_urls=replica_urls(service, env),
            replica_max_lag_ms=_int(env, "DB_REPLICA_MAX_LAG_MS", 1000),
            redis_cluster=env.get("REDIS_CLUSTER", "0") in ("1", "true", "yes"),
            cache_admit_on_second=_admit_on_second(env),
        )
