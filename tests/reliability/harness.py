"""Real processes for the fault and abuse tests: every service's instances
under a supervisord of the tests' own (so a SIGKILLed instance is restarted the
way the stack restarts it), a gateway in front of them, fresh databases, the
services' /metrics and /readyz, and a place to record the figures a run
produced (run/test-figures.jsonl, for the README)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from services.common import settings as cfg
from services.common.db import drop_database, prepare_database
from tests.conftest import PG_ADMIN_URL, ROOT
from tests.gateway.harness import Gateway, free_instance_base, gateway_env

FIGURES = ROOT / "run" / "test-figures.jsonl"
PYTHON = sys.executable


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def record_figures(name: str, figures: Mapping[str, object]) -> None:
    """Append one test's measurements; also printed, so `pytest -s` shows them."""
    line = json.dumps({"test": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures})
    print(f"\n[figures] {line}")
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as out:
        out.write(line + "\n")


def database_url(service: str, suffix: str, admin_url: str = PG_ADMIN_URL) -> str:
    return admin_url.rsplit("/", 1)[0] + f"/runway_test_{service}_{os.getpid()}_{suffix}"


def fresh_database(service: str, suffix: str, admin_url: str = PG_ADMIN_URL) -> str:
    """A new, migrated database of this suite's own (never another suite's name)."""
    url = database_url(service, suffix, admin_url)
    migrations = importlib.import_module(f"services.{service}.app").MIGRATIONS
    asyncio.run(drop_database(url))
    asyncio.run(prepare_database(url, migrations))
    return url


# --- HTTP probes ----------------------------------------------------------------------


def get_json(url: str, timeout: float = 2) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (OSError, ValueError):
        return 0, None


def readiness(port: int) -> dict:
    status, body = get_json(f"http://127.0.0.1:{port}/readyz", timeout=1)
    return {**(body if isinstance(body, dict) else {}), "http_status": status}


def cache_live(port: int) -> bool:
    """Redis answers and the local tier is leased: caching works fully."""
    ready = readiness(port)
    cache = ready.get("cache") or {}
    return (
        ready["http_status"] == 200
        and cache.get("redis") == "up"
        and cache.get("local_tier") == "live"
    )


def metric_samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an instance's /metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def cache_hits(port: int) -> float:
    """runway_cache_requests_total hits, local and Redis tiers together."""
    samples = metric_samples(port)
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "runway_cache_requests_total" and ("result", "hit") in labels
    )


def cache_counter(port: int, tier: str, result: str) -> float:
    """One runway_cache_requests_total series, e.g. ("redis", "hit")."""
    key = ("runway_cache_requests_total", (("result", result), ("tier", tier)))
    return metric_samples(port).get(key, 0.0)


def routed_requests(port: int) -> float:
    """Requests an instance served on the public routes (not /readyz or /metrics)."""
    samples = metric_samples(port)
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "runway_http_request_duration_seconds_count"
        and not any(k == "route" and v in ("/readyz", "/metrics", "/healthz") for k, v in labels)
    )


def wait_until(predicate, timeout_s: float, interval_s: float = 0.1) -> float | None:
    """Seconds until predicate() held, or None when it never did within timeout_s."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval_s)
    return None


# --- supervisord ----------------------------------------------------------------------


@dataclass
class Cluster:
    """`instances` processes of each service under supervisord, on free ports,
    their databases and Redis given by the caller; a gateway is added with
    `start_gateway`. Supervisord restarts a killed instance, as in the stack."""

    run_dir: Path
    databases: dict[str, str]
    redis_url: str
    instances: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    bases: dict[str, int] = field(init=False)
    process: subprocess.Popen | None = None
    gateways: list[Gateway] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bases = {s: free_instance_base(self.instances) for s in self.databases}

    @property
    def services(self) -> list[str]:
        return list(self.databases)

    @property
    def conf(self) -> Path:
        return self.run_dir / "supervisord.conf"

    def ports(self, service: str) -> list[int]:
        return [self.bases[service] + cfg.INSTANCE_PORT_STEP * i for i in range(self.instances)]

    def program(self, service: str, index: int) -> str:
        return f"{service}-{index}"

    def log(self, service: str, index: int) -> Path:
        return self.run_dir / "logs" / f"{self.program(service, index)}.log"

    def env(self) -> dict[str, str]:
        env = {
            "REDIS_URL": self.redis_url,
            "DB_POOL_MIN": "1",
            "DB_POOL_MAX": "4",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        for service, url in self.databases.items():
            env[f"{service.upper()}_DATABASE_URL"] = url
        return env

    def _section(self, service: str, index: int, port: int) -> str:
        return (
            f"[program:{self.program(service, index)}]\n"
            f"command={PYTHON} -m services.{service}.app\n"
            f"directory={ROOT}\n"
            f'environment=PORT="{port}"\n'
            # As infra/stack.py: restart whatever way the process ends.
            "autorestart=true\nstartsecs=1\nstartretries=10\n"
            "stopsignal=TERM\nstopwaitsecs=10\nredirect_stderr=true\n"
            f"stdout_logfile={self.log(service, index)}\n\n"
        )

    def write_config(self) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        sock = self.run_dir / "supervisor.sock"
        text = (
            f"[unix_http_server]\nfile={sock}\n\n"
            f"[supervisord]\nlogfile={self.run_dir / 'logs' / 'supervisord.log'}\n"
            f"pidfile={self.run_dir / 'supervisord.pid'}\nnodaemon=true\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            f"[supervisorctl]\nserverurl=unix://{sock}\n\n"
        )
        for service in self.services:
            for index, port in enumerate(self.ports(service)):
                text += self._section(service, index, port)
        self.conf.write_text(text)

    def start(self) -> None:
        self.write_config()
        supervisord = str(Path(PYTHON).parent / "supervisord")
        self.process = subprocess.Popen(
            [supervisord, "-c", str(self.conf)],
            env={**os.environ, **self.env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout_s: float = 30) -> dict[str, str]:
        """Wait for every instance; returns {service: log tail} for those that never came up."""
        deadline = time.monotonic() + timeout_s
        failed = {}
        for service in self.services:
            for index, port in enumerate(self.ports(service)):
                left = max(0.5, deadline - time.monotonic())
                if wait_until(lambda p=port: cache_live(p), left) is None:
                    tail = self.log(service, index).read_text()[-3000:]
                    failed[service] = (
                        failed.get(service, "")
                        + f"{self.program(service, index)} not ready:\n{tail}"
                    )
        return failed

    def supervisorctl(self, *args: str) -> str:
        result = subprocess.run(
            [str(Path(PYTHON).parent / "supervisorctl"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.stdout.strip()

    def pid(self, service: str, index: int) -> int:
        return int(self.supervisorctl("pid", self.program(service, index)) or 0)

    def start_gateway(self, **extra: str) -> Gateway:
        ports = {s: self.bases.get(s) or free_instance_base(self.instances) for s in cfg.SERVICES}
        gateway_dir = self.run_dir / f"gateway-{len(self.gateways)}"
        gateway = Gateway(gateway_dir, gateway_env(ports, self.instances, **extra))
        gateway.start()
        self.gateways.append(gateway)
        return gateway

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)  # supervisord stops its programs first
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
