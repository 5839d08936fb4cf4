"""The processes a benchmark run starts and stops: its own Redis (one server,
or with --redis-cluster a 3+3 Redis Cluster, infra/redis_cluster_subprocesses.py), the stack
(infra/stack.py, as `make up` runs it, with the benchmark's environment), and
the ceilings (aiohttp processes behind a bench-only NGINX). Also the process
groups whose CPU and memory are reported."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from infra import redis_cluster, redis_cluster_subprocesses
from infra.probe import http_status
from services.common import settings as svc_settings
from services.common.cache import flush_namespace

from . import procs
from .config import BENCH_DIR, PYTHON, ROOT, BenchConfig, cluster_ports
from .data import log

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CEILING_BODY = '{"product":"1","page":0,"count":5,"results":[]}'  # = bench/ceiling.py BODY


def wait_for(url: str, timeout_s: float = 30, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http_status(url) in ok:
            return
        time.sleep(0.2)
    raise SystemExit(f"[bench] {url} did not answer within {timeout_s:.0f}s")


class Processes:
    """Everything this run started, stopped in reverse order by stop_all()."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.env = {**os.environ, **cfg.stack_env()}
        self.redis: subprocess.Popen[bytes] | None = None
        self.cluster: redis_cluster_subprocesses.Cluster | None = None
        self.cluster_started_s: float | None = None
        self.ceiling_apps: list[subprocess.Popen[bytes]] = []
        self.ceiling_nginx: subprocess.Popen[bytes] | None = None
        self.stack_started = False
        # Where the next cold walk starts in each thread's stretch of its pool:
        # it goes on from where the last one stopped, so a later cold run
        # (a paired round, the next route) does not meet ids an earlier one
        # read, which the services' doorkeepers would admit (workload.lua).
        self.walk_from = 0
        self._pids_cache: tuple[float, dict[str, int]] = (0.0, {})

    # --- Redis --------------------------------------------------------------------

    def start_redis(self) -> None:
        if self.cfg.redis_cluster:
            self.start_cluster()
            return
        if self.cfg.external_redis:
            return
        directory = self.cfg.run_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        # No persistence: the benchmark measures the cache, not disk writes.
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.cfg.redis_port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                str(self.cfg.redis_socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--logfile",
                str(directory / "redis.log"),
            ],
            cwd=ROOT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.cfg.redis_port), "ping"],
                capture_output=True,
                text=True,
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise SystemExit("[bench] redis-server did not start (see run/bench/redis/redis.log)")

    def start_cluster(self) -> None:
        """A fresh 3+3 cluster on the ports config.cluster_ports derives from the
        port offset, in run/bench/redis-cluster/<port>/; returns once every node
        says cluster_state:ok, all slots covered, every primary with a replica."""
        ports, bus = cluster_ports(self.cfg.port_offset)
        taken = [p for p in [*ports, *bus.values()] if not _bindable(p)]
        if taken:
            raise SystemExit(
                f"[bench] ports {taken} are taken (a Redis Cluster node of an earlier"
                " run? `pgrep -fa redis-server`)"
            )
        root = self.cfg.run_dir / "redis-cluster"
        # A node that finds an earlier run's nodes-<port>.conf rejoins that
        # cluster instead of starting fresh, and `--cluster create` refuses it.
        shutil.rmtree(root, ignore_errors=True)
        self.cluster = redis_cluster_subprocesses.Cluster(
            root, tuple(ports), replicas=1, bus_ports=bus
        )
        log(f"starting a Redis Cluster, 3 primaries + 3 replicas: ports {ports[0]}-{ports[-1]}")
        try:
            self.cluster_started_s = round(self.cluster.start(timeout_s=60), 2)
        except RuntimeError as e:
            self.cluster = None  # start() stopped its nodes
            raise SystemExit(f"[bench] {e}") from None
        for line in self.cluster.topology().describe().splitlines():
            log(f"  {line}")

    def redis_summary(self) -> dict[str, Any]:
        """What the results record about the Redis measured: its kind, URL and,
        for the cluster, its topology and whether it was still whole at the end
        (a failover during the run would make it a different comparison)."""
        cfg = self.cfg
        out: dict[str, Any] = {"kind": cfg.redis_kind, "url": cfg.redis_url}
        if self.cluster is not None:
            try:
                seen = self.cluster.topology()
                out["primaries"] = [
                    {
                        "node": n.address,
                        "slots": n.slot_count,
                        "replicas": [r.address for r in seen.replicas_of(n)],
                    }
                    for n in seen.primaries
                ]
                problems = redis_cluster.problems(
                    self.cluster.ports, expect_nodes=len(self.cluster.ports), whole=True
                )
            except Exception as e:  # reported, not fatal: the workloads are measured
                problems = [f"{type(e).__name__}: {e}"]
            out["node_timeout_ms"] = self.cluster.node_timeout_ms
            out["started_s"] = self.cluster_started_s
            out["at_end"] = "ok" if not problems else problems[:8]
        return out

    def flush_caches(self) -> None:
        """Every service's namespace, through the services' own protocol, so
        their in-process tiers drop too (on a cluster too: the namespace's
        generation lives on one slot)."""
        for service in self.cfg.services:
            if not asyncio.run(
                flush_namespace(
                    self.cfg.redis_url, service, timeout_ms=500, cluster=self.cfg.redis_cluster
                )
            ):
                raise SystemExit(f"[bench] could not flush the {service} cache")

    # --- the stack ----------------------------------------------------------------------

    def start_stack(self) -> None:
        if self.cfg.base_url:
            return
        log("starting the stack (infra.stack up, gateway rate limit off)")
        # The gateway logs every request, as in production: a full run writes
        # a few GB. The previous run's log is of no use and would fill the disk.
        (Path(self.env["RUNWAY_RUN_DIR"]) / "logs" / "gateway-access.log").unlink(missing_ok=True)
        self.stack_started = True
        subprocess.run(
            [PYTHON, "-m", "bench.stackup", ",".join(self.cfg.services)],
            cwd=ROOT,
            env=self.env,
            check=True,
        )

    def stop_stack(self) -> None:
        subprocess.run([PYTHON, "-m", "infra.stack", "down"], cwd=ROOT, env=self.env, check=False)

    def supervisor_pids(self) -> dict[str, int]:
        """Program name -> pid of the benchmark stack's running programs. Asked
        again only when one of them has exited (a restart), at most every 5 s:
        supervisorctl is a Python process, the sampler asks twice a second, and
        asked every 5 s it took 1.7% of the CPU under W1 (perf)."""
        at, pids = self._pids_cache
        all_alive = bool(pids) and all(Path(f"/proc/{pid}").exists() for pid in pids.values())
        if all_alive or time.monotonic() - at < 5:
            return pids
        pids = self._query_supervisor()
        self._pids_cache = (time.monotonic(), pids)
        return pids

    def _query_supervisor(self) -> dict[str, int]:
        conf = Path(self.env["RUNWAY_RUN_DIR"]) / "supervisord.conf"
        if not conf.exists():
            return {}
        out = subprocess.run(
            [str(Path(PYTHON).parent / "supervisorctl"), "-c", str(conf), "status"],
            capture_output=True,
            text=True,
        ).stdout
        return {m[1]: int(m[2]) for m in re.finditer(r"^(\S+)\s+RUNNING\s+pid (\d+)", out, re.M)}

    # --- ceilings ------------------------------------------------------------------------

    def start_ceilings(self) -> None:
        cfg = self.cfg
        query_dsn = cfg.database_url("reviews")
        for _ in range(cfg.ceiling_procs):
            for port, extra in (
                (cfg.ceiling_bare_port, []),
                (cfg.ceiling_query_port, ["--query", query_dsn]),
            ):
                self.ceiling_apps.append(
                    subprocess.Popen(
                        [
                            PYTHON,
                            "-m",
                            "bench.ceiling",
                            "--port",
                            str(port),
                            "--reuse-port",
                            *extra,
                        ],
                        cwd=ROOT,
                    )
                )
        self.ceiling_nginx = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(self._nginx_dir()),
                "-c",
                str(self._nginx_conf()),
                "-e",
                str(self._nginx_dir() / "error.log"),
                "-g",
                "daemon off;",
            ],
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{cfg.ceiling_nginx_port}"
        wait_for(f"{base}/fixed")
        wait_for(f"{base}/bare")
        wait_for(f"{base}/query?id=1")

    def _nginx_dir(self) -> Path:
        return self.cfg.run_dir / "ceiling-nginx"

    def _nginx_conf(self) -> Path:
        directory = self._nginx_dir()
        (directory / "tmp").mkdir(parents=True, exist_ok=True)
        values = {
            "run_dir": str(directory),
            "port": str(self.cfg.ceiling_nginx_port),
            "bare_port": str(self.cfg.ceiling_bare_port),
            "query_port": str(self.cfg.ceiling_query_port),
            "body": CEILING_BODY,
        }
        text = (BENCH_DIR / "nginx-ceiling.conf.template").read_text()
        text = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)
        conf = directory / "nginx.conf"
        conf.write_text(text)
        return conf

    # --- process groups ---------------------------------------------------------------------

    def groups(self) -> dict[str, dict[str, int]]:
        """Group -> {label: pid} for the CPU and RSS report."""
        programs = self.supervisor_pids()
        out: dict[str, dict[str, int]] = {}
        for service in svc_settings.SERVICES:
            mine = {name: pid for name, pid in programs.items() if name.startswith(service + "-")}
            if mine:
                out[service] = mine
        if "gateway" in programs:
            out["nginx"] = procs.with_children("gateway", programs["gateway"])
        if self.ceiling_nginx is not None:
            out["ceiling-nginx"] = procs.with_children("ceiling-nginx", self.ceiling_nginx.pid)
        if self.ceiling_apps:
            out["ceiling-aiohttp"] = {f"ceiling:{p.pid}": p.pid for p in self.ceiling_apps}
        # Every Postgres process on the machine: one server serves all databases.
        out["postgres"] = procs.by_comm("postgres")
        if self.redis is not None:
            out["redis"] = {"redis": self.redis.pid}
        if self.cluster is not None:  # all six nodes: the replicas' work is the cluster's cost
            out["redis"] = {f"redis-{port}": p.pid for port, p in self.cluster.processes.items()}
        return out

    def service_labels(self) -> list[str]:
        return [name for name in self.supervisor_pids() if name.split("-")[0] in self.cfg.services]

    # --- teardown ----------------------------------------------------------------------------

    def stop_all(self) -> None:
        if self.stack_started and not self.cfg.keep_up:
            self.stop_stack()
        for proc in [self.ceiling_nginx, *self.ceiling_apps]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown
        for proc in [self.ceiling_nginx, *self.ceiling_apps]:
            if proc is not None:
                _reap(proc)
        if self.redis is not None and not (self.cfg.keep_up and self.stack_started):
            self.redis.terminate()
            _reap(self.redis)
        if self.cluster is not None and not (self.cfg.keep_up and self.stack_started):
            self.cluster.stop()


def _bindable(port: int) -> bool:
    """Nothing listens on it (SO_REUSEADDR, as redis-server binds: an earlier
    run's connections lingering in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
