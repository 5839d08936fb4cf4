"""Postgres streaming replicas for the local stack and the tests.

A replica is made with `pg_basebackup -R -X stream` from a running primary into
a directory of its own (data/, its log, its Unix socket), served on a given
port as a hot standby, optionally behind `recovery_min_apply_delay`. Its lag is
read from both ends: bytes between the primary's pg_current_wal_lsn() and the
replica's pg_last_wal_replay_lsn(), seconds from pg_stat_replication.replay_lag
on the primary (the replica's walsender, found by its application_name).

The primary must let the replica in for replication: a private test primary
gets `local replication all trust` and `host replication all 127.0.0.1/32
trust` (allow_replication(), PgCluster.allow_replication()); the stack's
primary (the machine's shared cluster) gets the host line in the pg_hba.conf
it reports, followed by pg_reload_conf(); it is never restarted.

As root, every Postgres binary runs as user postgres (Postgres refuses root),
and the directories it writes belong to that user.

The local stack's replica (PG_REPLICAS=1): infra/pg_replica_stack.py.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

# --- running Postgres binaries ---------------------------------------------------


def postgres_bin(major: int | None = None) -> Path | None:
    """The server binaries of Postgres `major` (Debian layout), else the newest
    installed ones, else whatever initdb is on PATH; None when there are none."""
    if major is not None and Path(f"/usr/lib/postgresql/{major}/bin/initdb").exists():
        return Path(f"/usr/lib/postgresql/{major}/bin")
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
        reverse=True,
    )
    found = candidates[0] if candidates else shutil.which("initdb")
    return Path(found).parent if found else None


def as_postgres() -> list[str]:
    """The prefix that runs a command as user postgres when we are root."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def give_to_postgres(*paths: Path) -> None:
    """Hand `paths` to user postgres when we are root (no-op otherwise)."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("postgres")
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)


def run_as_postgres(
    *args: str, timeout: float = 60, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*as_postgres(), *args], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
        raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr}{result.stdout}\n{tail}")
    return result


# --- letting replicas in ---------------------------------------------------------

HOST_REPLICATION = "host replication all 127.0.0.1/32 trust"
LOCAL_REPLICATION = "local replication all trust"


def allow_replication(hba: Path, lines: tuple[str, ...] = (HOST_REPLICATION,)) -> bool:
    """Put the missing `lines` at the top of pg_hba.conf (first match wins, so
    they precede any stricter replication rule). Whether the file changed; the
    server still has to reload it."""
    text = hba.read_text()
    present = {" ".join(line.split()) for line in text.splitlines()}
    missing = [line for line in lines if line not in present]
    if not missing:
        return False
    header = "# Added by infra/pg_replica.py: streaming replicas of the local stack and tests.\n"
    hba.write_text(header + "\n".join(missing) + "\n" + text)
    return True


async def ensure_replication_allowed(primary_dsn: str) -> None:
    """The stack's primary: add the host replication line to the pg_hba.conf it
    uses when missing, then pg_reload_conf() (a reload, never a restart)."""
    conn = await asyncpg.connect(primary_dsn, timeout=5)
    try:
        hba = Path(await conn.fetchval("SHOW hba_file"))
        try:
            changed = allow_replication(hba)
        except PermissionError:
            raise SystemExit(
                f"[replica] cannot edit {hba}: add `{HOST_REPLICATION}` to it and reload "
                "Postgres (SELECT pg_reload_conf()), or run as root"
            ) from None
        if changed:
            print(f"[replica] added `{HOST_REPLICATION}` to {hba}; reloading the primary")
            await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def replication_answers(host: str, port: int, bin_dir: Path, user: str = "postgres") -> bool:
    """Whether a replication connection gets in (IDENTIFY_SYSTEM over psql)."""
    conninfo = f"host={host} port={port} user={user} dbname=postgres replication=true"
    probe = [str(bin_dir / "psql"), "-w", "-X", "-Atq", "-d", conninfo, "-c", "IDENTIFY_SYSTEM"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def wait_replication_allowed(host: str, port: int, bin_dir: Path, timeout_s: float = 10) -> None:
    """pg_reload_conf() only signals the postmaster: wait until it lets us in."""
    deadline = time.monotonic() + timeout_s
    while not replication_answers(host, port, bin_dir):
        if time.monotonic() > deadline:
            raise SystemExit(
                f"[replica] {host}:{port} refuses replication connections: "
                f"does its pg_hba.conf have `{HOST_REPLICATION}` first?"
            )
        time.sleep(0.1)


# --- reading positions and lag -----------------------------------------------------

# Must be at least the primary's values on a hot standby.
HOT_STANDBY_SETTINGS = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)


async def _fetchval(dsn: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def hot_standby_settings(primary_dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(primary_dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            list(HOT_STANDBY_SETTINGS),
        )
        return {r["name"]: r["setting"] for r in rows}
    finally:
        await conn.close()


async def current_lsn(primary_dsn: str) -> str:
    return str(await _fetchval(primary_dsn, "SELECT pg_current_wal_lsn()::text"))


async def replay_lsn(replica_dsn: str) -> str | None:
    value = await _fetchval(replica_dsn, "SELECT pg_last_wal_replay_lsn()::text")
    return None if value is None else str(value)


def lsn_int(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


async def wait_for_replay(
    replica_dsn: str, lsn: str, timeout_s: float = 10, interval_s: float = 0.02
) -> float:
    """Poll the replica until it has replayed up to `lsn`; the seconds it took.
    TimeoutError past the deadline."""
    target = lsn_int(lsn)
    start = time.monotonic()
    conn = await asyncpg.connect(replica_dsn, timeout=5)
    try:
        while True:
            replayed = await conn.fetchval("SELECT pg_last_wal_replay_lsn()::text")
            if replayed is not None and lsn_int(replayed) >= target:
                return time.monotonic() - start
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"replica at {replayed}, not at {lsn} after {timeout_s}s")
            await asyncio.sleep(interval_s)
    finally:
        await conn.close()


@dataclass(frozen=True)
class Lag:
    primary_lsn: str
    replay_lsn: str | None
    bytes: int | None  # WAL the replica has yet to replay
    seconds: float | None  # pg_stat_replication.replay_lag; None when idle or unknown
    state: str | None  # the walsender's state (streaming, catchup, ...); None: not connected

    def describe(self) -> str:
        seconds = "-" if self.seconds is None else f"{self.seconds:.3f}s"
        return (
            f"state={self.state or 'not connected'} lag={self.bytes} bytes, {seconds} "
            f"(primary {self.primary_lsn}, replayed {self.replay_lsn})"
        )


async def lag(primary_dsn: str, replica_dsn: str, application_name: str) -> Lag:
    """How far the replica is behind, read from both ends."""
    replica = await asyncpg.connect(replica_dsn, timeout=5)
    try:
        replayed = await replica.fetchval("SELECT pg_last_wal_replay_lsn()::text")
    finally:
        await replica.close()
    primary = await asyncpg.connect(primary_dsn, timeout=5)
    try:
        row = await primary.fetchrow(
            "SELECT pg_current_wal_lsn()::text AS lsn,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint AS bytes,"
            " (SELECT extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication"
            "   WHERE application_name = $2 ORDER BY backend_start DESC LIMIT 1) AS seconds,"
            " (SELECT state FROM pg_stat_replication"
            "   WHERE application_name = $2 ORDER BY backend_start DESC LIMIT 1) AS state",
            replayed,
            application_name,
        )
    finally:
        await primary.close()
    return Lag(row["lsn"], replayed, row["bytes"], row["seconds"], row["state"])


# --- a replica -------------------------------------------------------------------

CONF_NAME = "runway-replica.conf"


@dataclass
class Replica:
    """A hot standby in `root` (data/, replica.log, its Unix socket), on `port`."""

    root: Path
    port: int
    bin_dir: Path = field(default_factory=lambda: postgres_bin() or Path("/usr/bin"))
    name: str = "runway_replica"  # its application_name on the primary

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "replica.log"

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def exists(self) -> bool:
        return (self.data / "PG_VERSION").exists() and (self.data / "standby.signal").exists()

    def create(
        self,
        primary_host: str,
        primary_port: int,
        *,
        user: str = "postgres",
        delay_ms: int = 0,
        settings: Mapping[str, str] | None = None,
        timeout_s: float = 600,
    ) -> None:
        """pg_basebackup -R -X stream from the primary into data/ (emptied
        first), then this replica's settings. The primary keeps running."""
        self.root.mkdir(parents=True, exist_ok=True)
        give_to_postgres(self.root)
        if self.data.exists():
            shutil.rmtree(self.data)
        conninfo = (
            f"host={primary_host} port={primary_port} user={user} application_name={self.name}"
        )
        run_as_postgres(
            str(self.bin_dir / "pg_basebackup"),
            "-d",
            conninfo,
            "-D",
            str(self.data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
            timeout=timeout_s,
        )
        self.configure(delay_ms=delay_ms, settings=settings)

    def configure(self, *, delay_ms: int = 0, settings: Mapping[str, str] | None = None) -> None:
        """Write this replica's settings (runway-replica.conf, included last from
        postgresql.conf) and the config files a copy of a Debian cluster lacks
        (its configuration lives in /etc, outside the data directory). Port,
        address and socket directory are given on the command line by start()."""
        conf = self.data / "postgresql.conf"
        include = f"include '{CONF_NAME}'\n"
        text = conf.read_text() if conf.exists() else ""
        if include not in text:
            conf.write_text(text + ("\n" if text and not text.endswith("\n") else "") + include)
        values = {
            "hot_standby": "on",
            "recovery_min_apply_delay": f"{int(delay_ms)}ms",
            # Prompt replay reports keep pg_stat_replication.replay_lag current.
            "wal_receiver_status_interval": "1s",
            "hot_standby_feedback": "on",
            "cluster_name": self.name,
            "logging_collector": "off",
            **(settings or {}),
        }
        lines = [f"{k} = '{v}'" for k, v in values.items()]
        (self.data / CONF_NAME).write_text(
            "# Written by infra/pg_replica.py.\n" + "\n".join(lines) + "\n"
        )
        hba = self.data / "pg_hba.conf"
        if not hba.exists():
            hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        ident = self.data / "pg_ident.conf"
        if not ident.exists():
            ident.write_text("")
        for path in (conf, self.data / CONF_NAME, hba, ident):
            give_to_postgres(path)

    def _pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_as_postgres(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args, timeout=timeout, log=self.log
        )

    def start(self, timeout_s: int = 60) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._pg_ctl(
            "-l", str(self.log), "-o", options, "-w", "-t", str(timeout_s), "start",
            timeout=timeout_s + 10,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")

    def running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        status = subprocess.run(
            [*as_postgres(), str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            text=True,
        )
        return status.returncode == 0

    def running_port(self) -> int | None:
        """The port the running server took (postmaster.pid, line 4)."""
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[3])
        except (OSError, IndexError, ValueError):
            return None

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def system_identifier(self) -> int | None:
        result = subprocess.run(
            [*as_postgres(), str(self.bin_dir / "pg_controldata"), str(self.data)],
            capture_output=True,
            text=True,
        )
        found = re.search(r"Database system identifier:\s+(\d+)", result.stdout)
        return int(found.group(1)) if found else None

    def newest_wal_segment(self) -> str | None:
        names = [p.name for p in (self.data / "pg_wal").glob("*") if WAL_SEGMENT.match(p.name)]
        return max(names) if names else None

    async def can_reuse(self, primary_dsn: str) -> bool:
        """It is a standby of this primary, and the primary still has the WAL
        it needs to catch up (no slot holds WAL for it)."""
        if not self.exists():
            return False
        conn = await asyncpg.connect(primary_dsn, timeout=5)
        try:
            primary_id = await conn.fetchval("SELECT system_identifier FROM pg_control_system()")
            oldest = await conn.fetchval(
                "SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'"
            )
        finally:
            await conn.close()
        if self.system_identifier() != primary_id:
            return False
        newest = self.newest_wal_segment()
        return newest is not None and oldest is not None and newest >= oldest

    async def wait_streaming(self, timeout_s: float = 30) -> None:
        """Until its WAL receiver streams from the primary; TimeoutError else."""
        deadline = time.monotonic() + timeout_s
        status = None
        while time.monotonic() < deadline:
            try:
                status = await _fetchval(self.dsn(), "SELECT status FROM pg_stat_wal_receiver")
            except (OSError, asyncpg.PostgresError):
                status = None
            if status == "streaming":
                return
            await asyncio.sleep(0.1)
        tail = self.log.read_text()[-2000:] if self.log.exists() else ""
        raise TimeoutError(f"replica on {self.port} not streaming (status {status})\n{tail}")


WAL_SEGMENT = re.compile(r"^[0-9A-F]{24}$")


async def make_replica(
    replica: Replica,
    primary_dsn: str,
    primary_host: str,
    primary_port: int,
    *,
    delay_ms: int = 0,
) -> None:
    """Base-backup `replica` from the primary with the hot-standby settings the
    primary requires, start it and wait until it streams."""
    settings = await hot_standby_settings(primary_dsn)
    replica.create(primary_host, primary_port, delay_ms=delay_ms, settings=settings)
    replica.start()
    await replica.wait_streaming()


async def server_major(dsn: str) -> int:
    """The major version of the server at `dsn` (its binaries must match)."""
    return int(str(await _fetchval(dsn, "SHOW server_version_num"))) // 10000
