"""PgBouncer in transaction mode in front of Postgres, for the local stack (a
supervisord program) and the tests (a foreground process).

render() writes pgbouncer.ini: pool_mode = transaction, listening on
127.0.0.1:<port> (PG_POOLER_PORT, 6432) and on a Unix socket in the run
directory, `*` (any database) forwarded to the primary's host or socket
directory and port, plus one entry per database given; auth_type = trust with
an auth_file naming the users (trust still requires the user to be listed);
max_client_conn and default_pool_size from sizing(). The process runs in the
foreground (`pgbouncer [-u postgres] <ini>`, logging to stderr); PgBouncer
refuses to run as root, so as root it is given `-u postgres`.

Startup parameters: PgBouncer 1.18 keeps track of client_encoding, DateStyle,
TimeZone, standard_conforming_strings and application_name itself and refuses
a connection that sends any other parameter it has not been told to ignore.
Only extra_float_digits (sent by JDBC and psycopg, harmless) is ignored here.
statement_timeout and idle_in_transaction_session_timeout are deliberately NOT
ignored: ignoring them would silently drop the timeouts. A client that sends
them in its startup packet (asyncpg's server_settings) is refused with
"unsupported startup parameter". Behind the pooler the service side sets its
timeouts on the server instead, per role and database, which survive any
RESET and apply to every pooled server connection:

    ALTER ROLE <role> IN DATABASE <db> SET statement_timeout = '5s';
    ALTER ROLE <role> IN DATABASE <db> SET idle_in_transaction_session_timeout = '10s';
    ALTER ROLE <role> IN DATABASE <db> SET plan_cache_mode = force_generic_plan;
    ALTER ROLE <role> IN DATABASE <db> SET jit = off;

(a role of its own for the services, so migrations and loads through the
direct URL keep no timeout). Also behind the pooler: asyncpg needs
statement_cache_size=0 (a named prepared statement lives on one server
connection; the next transaction may get another), no session state (SET,
advisory locks, LISTEN, temporary tables) outlives a transaction. Migrations
(python -m services.common.migrate) take the direct URL: they create the
database and the app role, which the pooler cannot do; their lock is a
transaction-level advisory lock, so it would hold through the pooler too.

The local stack with PG_POOLER=1: program "pgbouncer" under supervisord, config
in run/pgbouncer/; each service's <SERVICE>_DATABASE_URL becomes
postgresql://<user>@127.0.0.1:6432/<its database>,
<SERVICE>_MIGRATE_DATABASE_URL keeps the direct URL (the stack itself migrates
and loads through the direct one) and DB_POOLER=transaction tells the service
it is behind a transaction pooler. Replica URLs (PG_REPLICAS=1) go straight to
the replica, not through the pooler.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from infra.pg_replica import give_to_postgres
from infra.stack_settings import flag, int_setting

DEFAULT_PORT = 6432
# Never silently drop a timeout: see the module docstring.
IGNORE_STARTUP_PARAMETERS = ("extra_float_digits",)


def binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None


@dataclass(frozen=True)
class Sizing:
    max_client_conn: int
    default_pool_size: int
    reserve_pool_size: int


def sizing(instances: int = 2, services: int = 3, client_pool_max: int = 10) -> Sizing:
    """Room for every instance's full asyncpg pool (instances x services x
    DB_POOL_MAX clients, doubled for restarts overlapping and tools), and per
    database (one per service) half an instance-pair's clients as server
    connections: in transaction mode a server is held only for a transaction."""
    clients = instances * services * client_pool_max
    per_database = max(2, instances * client_pool_max // 2)
    return Sizing(
        max_client_conn=max(100, 2 * clients),
        default_pool_size=per_database,
        reserve_pool_size=max(1, per_database // 5),
    )


@dataclass(frozen=True)
class Server:
    """Where a pooled database lives: host (name, address or socket directory)."""

    host: str
    port: int = 5432
    dbname: str | None = None

    def connstr(self) -> str:
        parts = [f"host={self.host}", f"port={self.port}"]
        if self.dbname:
            parts.append(f"dbname={self.dbname}")
        return " ".join(parts)


def server_of(url: str) -> tuple[Server, str, str]:
    """The server, user and password a postgresql:// URL names (a socket
    directory may be given as ?host=, as infra/stack.py's local URLs do)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["127.0.0.1"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    dbname = unquote(parts.path.lstrip("/")) or None
    return (
        Server(host, port, dbname),
        unquote(parts.username or "postgres"),
        unquote(parts.password or ""),
    )


def render(
    *,
    port: int,
    socket_dir: Path,
    auth_file: Path,
    fallback: Server,
    databases: Mapping[str, Server] | None = None,
    size: Sizing | None = None,
    admin_users: Iterable[str] = ("postgres",),
    ignore_startup_parameters: Iterable[str] = IGNORE_STARTUP_PARAMETERS,
) -> str:
    size = size or sizing()
    entries = [f"{name} = {server.connstr()}" for name, server in (databases or {}).items()]
    entries.append(f"* = {fallback.connstr()}")
    admins = ",".join(admin_users)
    return f"""\
;; Written by infra/pgbouncer.py.
[databases]
{chr(10).join(entries)}

[pgbouncer]
pool_mode = transaction
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {socket_dir}
auth_type = trust
auth_file = {auth_file}
admin_users = {admins}
stats_users = {admins}
max_client_conn = {size.max_client_conn}
default_pool_size = {size.default_pool_size}
reserve_pool_size = {size.reserve_pool_size}
reserve_pool_timeout = 1
; statement_timeout is not listed: it would be dropped silently (module docstring).
ignore_startup_parameters = {",".join(ignore_startup_parameters)}
server_login_retry = 1
log_connections = 0
log_disconnections = 0
"""


def auth_file_text(users: Mapping[str, str]) -> str:
    def quote(value: str) -> str:
        return '"' + value.replace('"', '""') + '"'

    return "".join(f"{quote(user)} {quote(password)}\n" for user, password in users.items())


def write_config(
    directory: Path,
    *,
    port: int,
    fallback: Server,
    databases: Mapping[str, Server] | None = None,
    users: Mapping[str, str] | None = None,
    size: Sizing | None = None,
    ignore_startup_parameters: Iterable[str] = IGNORE_STARTUP_PARAMETERS,
) -> Path:
    """pgbouncer.ini, userlist.txt and the socket directory in `directory`,
    readable (and the socket directory writable) by the user it runs as."""
    directory.mkdir(parents=True, exist_ok=True)
    socket_dir = directory / "socket"
    socket_dir.mkdir(exist_ok=True)
    give_to_postgres(directory, socket_dir)
    auth_file = directory / "userlist.txt"
    auth_file.write_text(auth_file_text(users or {"postgres": ""}))
    auth_file.chmod(0o640)
    give_to_postgres(auth_file)
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        render(
            port=port,
            socket_dir=socket_dir,
            auth_file=auth_file,
            fallback=fallback,
            databases=databases,
            size=size,
            admin_users=list(users or {"postgres": ""}),
            ignore_startup_parameters=ignore_startup_parameters,
        )
    )
    return ini


def command(ini: Path) -> list[str]:
    exe = binary()
    if exe is None:
        raise RuntimeError("pgbouncer missing: run `bash infra/ensure-deps.sh pgbouncer`")
    return [exe, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(ini)]


def wait_listening(
    port: int, timeout_s: float = 10, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"pgbouncer not listening on 127.0.0.1:{port} after {timeout_s}s")


@dataclass
class PgBouncer:
    """A foreground pgbouncer owned by the caller (the tests)."""

    directory: Path
    port: int
    fallback: Server
    users: dict[str, str] = field(default_factory=lambda: {"postgres": ""})
    size: Sizing | None = None
    process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.directory / "pgbouncer.log"

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout_s: float = 10) -> None:
        ini = write_config(
            self.directory,
            port=self.port,
            fallback=self.fallback,
            users=self.users,
            size=self.size,
        )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command(ini), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_listening(self.port, timeout_s, self.process)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise RuntimeError(f"{e}\n{self.log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        """SIGTERM: PgBouncer's immediate shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


# --- the local stack -------------------------------------------------------------

ProgramFn = Callable[[str, str, dict[str, str], Path], str]


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    return flag(env, "PG_POOLER")


def stack_port(env: Mapping[str, str] = os.environ) -> int:
    return int_setting(env, "PG_POOLER_PORT", DEFAULT_PORT)


def pooled_url(direct_url: str, env: Mapping[str, str] = os.environ) -> str:
    """The same database and user through the stack's pooler."""
    server, user, _ = server_of(direct_url)
    return f"postgresql://{user}@127.0.0.1:{stack_port(env)}/{server.dbname or 'postgres'}"


def service_env(service: str, direct_url: str, env: Mapping[str, str] = os.environ) -> dict:
    """With PG_POOLER=1 the service reaches its database through the pooler
    and keeps the direct URL for migrations."""
    if not enabled(env):
        return {}
    prefix = service.upper()
    return {
        f"{prefix}_DATABASE_URL": pooled_url(direct_url, env),
        f"{prefix}_MIGRATE_DATABASE_URL": direct_url,
        "DB_POOLER": "transaction",
    }


def programs(
    run_dir: Path,
    program: ProgramFn,
    fallback_url: str,
    direct_urls: Mapping[str, str],
    env: Mapping[str, str] = os.environ,
) -> list[str]:
    """The supervisord program for PG_POOLER=1 (none otherwise): `*` goes to
    the stack's Postgres (`fallback_url`), each service's database to where
    its direct URL points."""
    if not enabled(env):
        return []
    fallback, fallback_user, fallback_password = server_of(fallback_url)
    databases, users = {}, {fallback_user: fallback_password}
    for service, url in direct_urls.items():
        server, user, password = server_of(url)
        if server.dbname:
            databases[server.dbname] = server
        users.setdefault(user, password)
        # The serving role services/common/migrate.py creates (trust still
        # needs every user listed; listing one that does not exist is harmless).
        app = env.get(f"{service.upper()}_APP_ROLE") or env.get("RUNWAY_APP_ROLE")
        users.setdefault(app or f"runway_{service}", "")
    instances = max(2, max(int(env.get("INSTANCES", "1") or 1), 1))
    size = sizing(instances, max(1, len(direct_urls)), int(env.get("DB_POOL_MAX", "10") or 10))
    ini = write_config(
        run_dir / "pgbouncer",
        port=stack_port(env),
        fallback=Server(fallback.host, fallback.port),
        databases=databases,
        users=users,
        size=size,
    )
    return [program("pgbouncer", " ".join(command(ini)), {}, run_dir / "logs" / "pgbouncer.log")]


def wait_ready(env: Mapping[str, str] = os.environ, timeout_s: float = 15) -> None:
    if enabled(env):
        wait_listening(stack_port(env), timeout_s)
        print(f"[pooler] pgbouncer (transaction mode) on 127.0.0.1:{stack_port(env)}")
