"""A private Postgres cluster for the restart and replica tests: the machine's
shared Postgres is never restarted. initdb into a temporary directory, served
on a free port; as root everything runs as the postgres user (Postgres refuses
to run as root), from a directory that user owns. allow_replication() lets
streaming replicas (infra/pg_replica.py) in; replica() makes one."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from infra.pg_replica import (
    HOST_REPLICATION,
    LOCAL_REPLICATION,
    Replica,
    allow_replication,
    as_postgres,
    give_to_postgres,
    make_replica,
    postgres_bin,
)
from tests.conftest import free_port

__all__ = ["PgCluster", "postgres_bin"]


@dataclass
class PgCluster:
    bin_dir: Path
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="runway-pg-")))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self) -> list[str]:
        return as_postgres()

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [*self._as_owner(), *args], capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            log = (self.root / "postgres.log").read_text() if self.log_exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stderr}\n{log[-2000:]}")

    def log_exists(self) -> bool:
        return (self.root / "postgres.log").exists()

    def init(self) -> None:
        give_to_postgres(self.root)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def reload(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "reload")

    def allow_replication(self) -> None:
        """Trust replication connections over the socket and TCP loopback."""
        if allow_replication(self.data / "pg_hba.conf", (LOCAL_REPLICATION, HOST_REPLICATION)):
            if (self.data / "postmaster.pid").exists():
                self.reload()

    async def replica(self, root: Path | None = None, *, delay_ms: int = 0) -> Replica:
        """A streaming replica of this (running) cluster on a free port,
        streaming when returned; destroy() it after use."""
        root = root or Path(tempfile.mkdtemp(prefix="runway-pg-replica-"))
        replica = Replica(root, free_port(), bin_dir=self.bin_dir)
        self.allow_replication()
        await make_replica(replica, self.admin_url, "127.0.0.1", self.port, delay_ms=delay_ms)
        return replica

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
