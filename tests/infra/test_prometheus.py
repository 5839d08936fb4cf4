"""Prometheus: the checked-in (container) config, the copy the local stack
renders, the alert rules and their unit tests, all through promtool; and every
metric the rules name is one the services export."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from infra import gateway_and_prometheus
from services.common import settings as cfg
from services.photos import settings as photos_cfg
from tests.conftest import ROOT
from tests.infra.metric_names import PROMETHEUS_BUILTINS, exported_names, metric_names

PROM = ROOT / "infra" / "prometheus"
PROMTOOL = "/usr/bin/promtool"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_checked_in_config_is_valid() -> None:
    result = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", str(PROM / "rules" / "runway.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(PROM / "rules" / "runway_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_the_required_conditions() -> None:
    rules = yaml.safe_load((PROM / "rules" / "runway.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "RunwayHighErrorRatio",
        "RunwayHighP99Latency",
        "RunwayCacheHitRatioCollapse",
        "RunwayDatabaseDown",
    } <= alerts
    tested = (PROM / "rules" / "runway_test.yml").read_text()
    for alert in alerts:
        assert f"alertname: {alert}" in tested, f"{alert} has no promtool unit test"


def test_rules_name_only_exported_metrics() -> None:
    exported = exported_names() | PROMETHEUS_BUILTINS
    rules = yaml.safe_load((PROM / "rules" / "runway.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names or any(r in rule["expr"] for r in recorded), rule
            unknown = names - exported
            assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_container_targets_match_the_settings() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    for service in cfg.SERVICES:
        targets = jobs[service]["static_configs"][0]["targets"]
        assert targets == [f"{service}:{cfg.BASE_PORTS[service]}"]
    assert jobs["photos"]["static_configs"][0]["targets"] == [f"photos:{photos_cfg.BASE_PORT}"]


@pytest.mark.parametrize("env", [{}, {"INSTANCES": "3", "QA_PORT": "9103"}])
def test_local_config_scrapes_every_instance(
    env: dict[str, str], tmp_path: Path, monkeypatch
) -> None:
    for name in ("INSTANCES", "QA_PORT", "OVERVIEW_INSTANCES", "REVIEWS_INSTANCES", "QA_INSTANCES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = gateway_and_prometheus.write_prometheus_config(tmp_path, 19090)
    config = yaml.safe_load(path.read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    for service in cfg.SERVICES:
        targets = jobs[service]["static_configs"][0]["targets"]
        assert targets == [f"127.0.0.1:{p}" for p in cfg.instance_ports(service, env)]
    photos = jobs["photos"]["static_configs"][0]["targets"]
    assert photos == [f"127.0.0.1:{p}" for p in photos_cfg.instance_ports(env)]
    result = promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the platform rules (exporters, SLO burn rates, invalidations) -------------------


def test_platform_rules_are_valid_and_each_alert_is_unit_tested() -> None:
    result = promtool("check", "rules", str(PROM / "rules" / "platform.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("test", "rules", str(PROM / "rules" / "platform_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((PROM / "rules" / "platform.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "RunwayErrorBudgetFastBurn",
        "RunwayLatencyBudgetFastBurn",
        "RunwayCacheOutboxRelaying",
        "RunwayCacheOutboxRelayFailing",
        "RunwayCacheInvalidationsFailed",
        "RunwayGatewayDown",
        "RunwayRedisEvicting",
        "RunwayPostgresDeadlocks",
        "RunwayReplicaLagging",
    } <= alerts
    tested = (PROM / "rules" / "platform_test.yml").read_text()
    for alert in alerts:
        assert f"alertname: {alert}" in tested, f"{alert} has no promtool unit test"
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert "rules/platform.yml" in config["rule_files"]


def test_platform_rules_name_only_exported_service_metrics() -> None:
    exported = exported_names() | PROMETHEUS_BUILTINS | {"runway_db_replica_lag_seconds"}
    rules = yaml.safe_load((PROM / "rules" / "platform.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - exported
            assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_exporter_jobs_in_both_configs(tmp_path: Path, monkeypatch) -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs["nginx"] == ["gateway:9113"]  # the gateway's sidecar (compose.yaml)
    assert jobs["redis"] == ["redis-exporter:9121"]
    assert jobs["postgres"] == ["postgres-exporter:9187"]
    monkeypatch.setenv("REDIS_EXPORTER_PORT", "19121")
    monkeypatch.delenv("NGINX_EXPORTER_PORT", raising=False)
    monkeypatch.delenv("POSTGRES_EXPORTER_PORT", raising=False)
    path = gateway_and_prometheus.write_prometheus_config(tmp_path, 19090)
    local = yaml.safe_load(path.read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in local["scrape_configs"]}
    assert jobs["nginx"] == ["127.0.0.1:9113"]
    assert jobs["redis"] == ["127.0.0.1:19121"]
    assert jobs["postgres"] == ["127.0.0.1:9187"]
