"""The Grafana dashboard: valid JSON, RED per route, cache hit ratio and pool
waits, every query naming metrics the services really export, and every query
valid PromQL (promtool parses them as recording rules)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT
from tests.infra.metric_names import exported_names, exporter_names, metric_names

DASHBOARD = ROOT / "infra" / "grafana" / "runway-dashboard.json"


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(dashboard: dict) -> list[tuple[str, str]]:
    out = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"variable {var['name']}", var["query"]["query"]))
    return out


def test_dashboard_is_well_formed() -> None:
    dashboard = load()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()


def recorded_names() -> set[str]:
    names = set()
    for path in (ROOT / "infra" / "prometheus" / "rules").glob("*.yml"):
        if path.name.endswith("_test.yml"):
            continue
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def test_every_query_names_exported_metrics() -> None:
    """The services' names against a live registry (and the replica gauges);
    the exporters' (nginx_, redis_, pg_) are checked against the running
    exporters in tests/infra/test_exporters.py; recording rules by name."""
    exported = exported_names() | {"runway_db_replica_lag_seconds"}
    recorded = recorded_names()
    for title, expr in queries(load()):
        names = metric_names(expr)
        uses = names | exporter_names(expr) | {r for r in recorded if r in expr}
        assert uses, f"{title}: names no metric"
        assert names <= exported, f"{title}: {names - exported} not exported"


def test_dashboard_covers_the_platform() -> None:
    exprs = "\n".join(expr for _, expr in queries(load()))
    for needle in (
        "nginx_http_requests_total",
        "nginx_connections_active",
        "redis_memory_used_bytes",
        "redis_evicted_keys_total",
        "redis_keyspace_hits_total",
        "redis_connected_clients",
        "pg_stat_database_numbackends",
        "pg_stat_database_deadlocks",
        "pg_stat_database_blks_hit",
        "runway_db_replica_lag_seconds",
        "pg_replication_lag",
        "job:runway_error_ratio:rate1h",
        "job:runway_slow_ratio:rate1h",
    ):
        assert needle in exprs, needle


def test_dashboard_covers_red_cache_and_pool() -> None:
    exprs = "\n".join(expr for _, expr in queries(load()))
    for needle in (
        "runway_http_request_duration_seconds_count",  # rate and errors
        'status=~"5.."',
        "runway_http_request_duration_seconds_bucket",  # duration
        "by (job, route",
        'result="hit"',  # hit ratio
        "runway_db_pool_acquire_seconds_bucket",  # pool waits
        "runway_db_pool_idle",
    ):
        assert needle in exprs, needle


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, (_, expr) in enumerate(q for q in queries(load()) if "label_values" not in q[1]):
        concrete = expr.replace("$__rate_interval", "5m").replace("$service", ".*")
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["/usr/bin/promtool", "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
