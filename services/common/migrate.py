"""The migrate step, run before the serving processes start (they run no DDL
and refuse an older schema: db.require_schema):

    python -m services.common.migrate [overview reviews qa]      (`make migrate`)

For each service, connected through <SERVICE>_MIGRATE_DATABASE_URL (else
<SERVICE>_DATABASE_URL) as a role with CREATEDB and DDL rights, always
directly to Postgres, never through PgBouncer (it creates databases and roles):

1. creates the database if it is missing;
2. applies the pending numbered SQL files under the migration lock (db.migrate:
   a transaction-level advisory lock, one transaction per file);
3. creates the serving ("app") role if missing and gives it DML rights only:
   SELECT/INSERT/UPDATE/DELETE on the tables, USAGE/SELECT on the sequences,
   the same by default for what later migrations create, no CREATE on the
   schema; and sets its timeouts and plan cache mode per role and database
   (ALTER ROLE <app> IN DATABASE <db> SET statement_timeout = ...), which
   apply on every server connection, PgBouncer's included (it does not
   forward settings sent as startup parameters).

The app role: <SERVICE>_APP_ROLE or RUNWAY_APP_ROLE; else the user of
<SERVICE>_DATABASE_URL when it differs from the migrating user; else
runway_<service>. Its password is the one in <SERVICE>_DATABASE_URL when that
URL names it (otherwise the role's password is left as it is).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg

from .db import (
    _MIGRATION_LOCK,
    IDLE_IN_TRANSACTION_TIMEOUT_MS,
    JIT,
    PLAN_CACHE_MODE,
    database_name,
    prepare_database,
)
from .settings import SERVICES, Settings, database_url, migrate_database_url

log = logging.getLogger("runway.migrate")

SERVICES_DIR = Path(__file__).resolve().parent.parent


def migrations_dir(service: str) -> Path:
    """services/<service>/migrations (the app modules' MIGRATIONS)."""
    return SERVICES_DIR / service / "migrations"


def ident(name: str) -> str:
    """`name` quoted as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _user(url: str) -> str:
    return unquote(urlsplit(url).username or "")


@dataclass(frozen=True)
class AppRole:
    name: str
    password: str | None
    statement_timeout_ms: int


def app_role(service: str, env: Mapping[str, str] = os.environ) -> AppRole:
    """The serving role of `service` (module docstring) and its settings."""
    serving = database_url(service, env)
    serving_user = _user(serving)
    name = env.get(f"{service.upper()}_APP_ROLE") or env.get("RUNWAY_APP_ROLE")
    if not name:
        migrating_user = _user(migrate_database_url(service, env))
        distinct = serving_user and serving_user != migrating_user
        name = serving_user if distinct else f"runway_{service}"
    password = urlsplit(serving).password
    return AppRole(
        name=name,
        password=unquote(password) if password and serving_user == name else None,
        statement_timeout_ms=Settings.from_env(service, env).statement_timeout_ms,
    )


async def grant_app_role(conn: asyncpg.Connection, database: str, role: AppRole) -> None:
    """Create `role` if missing and give it DML rights only in `database`
    (the one `conn` is in), with its session settings as per-database role
    settings."""
    r = ident(role.name)
    try:
        async with conn.transaction():
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role.name):
                await conn.execute(f"CREATE ROLE {r} LOGIN")
    except asyncpg.DuplicateObjectError:
        pass  # created concurrently by the migrator of another database
    if await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", role.name):
        raise SystemExit(f"app role {role.name} is a superuser: give the services their own role")
    async with conn.transaction():
        # Under the migration lock: two migrators of one database do not race.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        if role.password is not None:
            await conn.execute(
                await conn.fetchval(
                    "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)",
                    role.name,
                    role.password,
                )
            )
        for statement in (
            f"GRANT CONNECT ON DATABASE {ident(database)} TO {r}",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            f"GRANT USAGE ON SCHEMA public TO {r}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {r}",
            # What later migrations (run by this same migrating role) create.
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
            f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {r}",
            f"ALTER ROLE {r} IN DATABASE {ident(database)}"
            f" SET statement_timeout = {int(role.statement_timeout_ms)}",
            f"ALTER ROLE {r} IN DATABASE {ident(database)}"
            f" SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}",
            f"ALTER ROLE {r} IN DATABASE {ident(database)} SET plan_cache_mode = {PLAN_CACHE_MODE}",
            f"ALTER ROLE {r} IN DATABASE {ident(database)} SET jit = {JIT}",
        ):
            await conn.execute(statement)


@dataclass(frozen=True)
class Outcome:
    service: str
    database: str
    applied: list[str]
    version: str
    role: AppRole


async def migrate_service(
    service: str, url: str | None = None, env: Mapping[str, str] = os.environ
) -> Outcome:
    """The whole step for one service: database, migrations, app role.
    `url` overrides the migrate URL from `env`."""
    url = url or migrate_database_url(service, env)
    directory = migrations_dir(service)
    applied = await prepare_database(url, directory)
    role = app_role(service, env)
    conn = await asyncpg.connect(url, timeout=5, statement_cache_size=0)
    try:
        await grant_app_role(conn, database_name(url), role)
        version = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    finally:
        await conn.close()
    if _user(url) == _user(database_url(service, env)) and _user(url) != role.name:
        log.warning(
            "%s: the services connect as the migrating role %s (DDL rights kept); point"
            " %s_DATABASE_URL at the app role %s",
            service,
            _user(url) or "(default)",
            service.upper(),
            role.name,
        )
    return Outcome(service, database_name(url), applied, version or "none", role)


def migrate_summary(out: Outcome) -> str:
    applied = ", ".join(out.applied) or "nothing pending"
    return (
        f"[migrate] {out.service}: {out.database} at {out.version} ({applied}); app role"
        f" {out.role.name}: DML only, statement_timeout {out.role.statement_timeout_ms} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.migrate",
        description="Create each service's database, apply its migrations and grant its"
        " app role DML rights (run before the services start).",
    )
    parser.add_argument("services", nargs="*", help=f"default: {' '.join(SERVICES)}")
    args = parser.parse_args(argv)
    unknown = [s for s in args.services if s not in SERVICES]
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; one of {', '.join(SERVICES)}")
    logging.basicConfig(level=logging.WARNING, format="[migrate] %(levelname)s %(message)s")
    for service in args.services or SERVICES:
        try:
            out = asyncio.run(migrate_service(service))
        except (OSError, asyncpg.PostgresError) as exc:
            raise SystemExit(f"[migrate] {service}: {type(exc).__name__}: {exc}") from None
        print(migrate_summary(out))


if __name__ == "__main__":
    main(sys.argv[1:])
