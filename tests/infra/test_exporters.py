"""infra/exporters.py against the real things: the three Debian exporters
started as the stack starts them (same argv and environment) in front of a
real nginx (the rendered gateway), the tests' Redis and the local Postgres,
and a Prometheus on the stack's rendered config with only those jobs: each
target up and each exporter reading its server (nginx_up, redis_up, pg_up).
Every exporter metric the rules and the dashboard name is one they export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from infra import exporters, gateway_and_prometheus
from tests.conftest import PG_ADMIN_URL, ROOT, RedisServer, free_port
from tests.gateway.harness import Gateway, gateway_env, wait_http
from tests.infra.metric_names import exporter_names

pytestmark = pytest.mark.skipif(
    any(e.path() is None for e in exporters.EXPORTERS),
    reason="exporters not installed (bash infra/ensure-deps.sh exporters)",
)
RULES = ROOT / "infra" / "prometheus" / "rules" / "platform.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "runway-dashboard.json"


def named_by_rules_and_dashboard() -> set[str]:
    names = set()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            names |= exporter_names(rule["expr"])
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            names |= exporter_names(target["expr"])
    return names


@pytest.fixture(scope="module")
def env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    gateway_dir = tmp_path_factory.mktemp("exp-gateway")
    genv = gateway_env({"overview": free_port(), "reviews": free_port(), "qa": free_port()}, 1)
    gateway = Gateway(gateway_dir, genv)
    gateway.start()
    env = {
        **genv,
        "REDIS_URL": redis_server.url,
        "POSTGRES_EXPORTER_DSN": PG_ADMIN_URL + "?sslmode=disable",
        "NGINX_EXPORTER_PORT": str(free_port()),
        "REDIS_EXPORTER_PORT": str(free_port()),
        "POSTGRES_EXPORTER_PORT": str(free_port()),
    }
    processes = []
    logs = tmp_path_factory.mktemp("exp-logs")
    try:
        for exporter in exporters.EXPORTERS:
            argv, extra = exporters.command(exporter, exporter.path(), env)
            log = (logs / f"{exporter.job}.log").open("wb")
            processes.append(
                subprocess.Popen(argv, env={**os.environ, **extra}, stdout=log, stderr=log)
            )
        for exporter in exporters.EXPORTERS:
            wait_http(f"http://127.0.0.1:{exporter.port(env)}/metrics", timeout_s=20)
        yield env
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        gateway.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def test_each_exporter_reads_its_server(env: dict) -> None:
    text = {e.job: scrape(e.port(env)) for e in exporters.EXPORTERS}
    assert re.search(r"^nginx_up 1$", text["nginx"], re.M), text["nginx"][:500]
    assert re.search(r"^redis_up 1$", text["redis"], re.M)
    assert re.search(r"^pg_up\{[^}]*\} 1$|^pg_up 1$", text["postgres"], re.M)
    assert "pg_stat_database_numbackends" in text["postgres"]


def test_rules_and_dashboard_name_only_what_the_exporters_export(env: dict) -> None:
    exported = set()
    for exporter in exporters.EXPORTERS:
        for line in scrape(exporter.port(env)).splitlines():
            if line.startswith("# TYPE "):
                name, kind = line.split()[2:4]
                exported.add(name)
                if kind == "histogram" or kind == "summary":
                    exported |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif line and not line.startswith("#"):
                exported.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    # pg_replication_* come from infra/prometheus/postgres-queries.yaml (0 on a primary).
    missing = named_by_rules_and_dashboard() - exported
    assert missing == set(), missing


def test_prometheus_on_the_stack_config_has_every_exporter_up(
    env: dict, tmp_path: Path, monkeypatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    config = gateway_and_prometheus.prometheus_config(port)
    config["scrape_configs"] = [
        {**j, "scrape_interval": "1s"}
        for j in config["scrape_configs"]
        if j["job_name"] in exporters.JOBS
    ]
    config["rule_files"] = []
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    command = gateway_and_prometheus.prometheus_command(
        gateway_and_prometheus.prometheus_binary() or "prometheus", path, tmp_path, port
    )
    # exec: the shell becomes Prometheus, so terminate() below stops it (it
    # stopped only the shell, and every test session left a Prometheus behind).
    process = subprocess.Popen(
        "exec " + command, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout_s=20)
        deadline = time.monotonic() + 20
        health: dict[str, str] = {}
        values: dict[str, str] = {}
        while time.monotonic() < deadline:
            base = f"http://127.0.0.1:{port}/api/v1"
            with urllib.request.urlopen(f"{base}/targets", timeout=2) as resp:
                targets = json.load(resp)["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            query = urllib.parse.quote("nginx_up or redis_up or pg_up")
            with urllib.request.urlopen(f"{base}/query?query={query}", timeout=2) as resp:
                result = json.load(resp)["data"]["result"]
            values = {r["metric"]["__name__"]: r["value"][1] for r in result}
            if health == dict.fromkeys(exporters.JOBS, "up") and set(values.values()) == {"1"}:
                if len(values) == 3:
                    return
            time.sleep(0.5)
        pytest.fail(f"targets {health}, up series {values}")
    finally:
        process.terminate()
        process.wait(10)
