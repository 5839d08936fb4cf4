"""`bench.run --redis-cluster`: the cluster's port layout, the environment the
stack gets, and what the results record (no server started here)."""

from __future__ import annotations

import pytest

from bench import report
from bench.config import BenchConfig, cluster_ports
from bench.run import parse_args
from infra import redis_cluster_stack
from services.common import settings as svc_settings
from tests.conftest import PORT_RANGE


@pytest.fixture(autouse=True)
def _no_postgres_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """stack_env() would look for the local Postgres socket otherwise."""
    for service in svc_settings.SERVICES:
        monkeypatch.setenv(f"BENCH_{service.upper()}_DATABASE_URL", f"postgresql:///{service}")
    monkeypatch.delenv("BENCH_TCP", raising=False)


def config(*args: str) -> BenchConfig:
    cfg, _ = parse_args(["--quick", *args])
    return cfg


def bench_ports(cfg: BenchConfig) -> set[int]:
    """Every other port a benchmark stack of this offset listens on."""
    ports = {
        cfg.redis_port,
        cfg.port(svc_settings.GATEWAY_PORT),
        cfg.port(svc_settings.GATEWAY_STATUS_PORT),
        cfg.ceiling_nginx_port,
        cfg.ceiling_bare_port,
        cfg.ceiling_query_port,
        int(cfg.stack_env()["PHOTOS_PORT"]),
    }
    for service in svc_settings.SERVICES:
        ports |= set(cfg.instance_ports(service))
    return ports


@pytest.mark.parametrize("offset", [10000, 0])
def test_cluster_ports_clear_of_make_up_the_stack_and_the_tests(offset: int) -> None:
    ports, bus = cluster_ports(offset)
    assert len(set(ports)) == 6 and set(bus) == set(ports)
    used = set(ports) | set(bus.values())
    assert len(used) == 12
    make_up = redis_cluster_stack.stack_ports({})  # 7000-7005, buses + 10000
    assert not used & (set(make_up) | {p + 10000 for p in make_up})
    assert not used & bench_ports(config("--port-offset", str(offset)))
    assert max(used) < PORT_RANGE[0]  # the tests' servers pick theirs above


def test_default_offset_layout() -> None:
    ports, bus = cluster_ports(10000)
    assert ports == list(range(16380, 16386))
    assert [bus[p] for p in ports] == list(range(16480, 16486))


def test_an_offset_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError):
        cluster_ports(60000)


def test_the_services_get_the_cluster_seed() -> None:
    cfg = config("--redis-cluster")
    env = cfg.stack_env()
    assert env["REDIS_CLUSTER"] == "1"
    assert env["REDIS_URL"] == "redis://127.0.0.1:16380/0"
    # infra.stack gives each service program REDIS_URL from REDIS_CLUSTER_PORT.
    assert redis_cluster_stack.service_env(env) == {
        "REDIS_CLUSTER": "1",
        "REDIS_URL": env["REDIS_URL"],
    }
    assert cfg.redis_kind == "cluster 3+3"


def test_the_default_is_the_single_redis_on_its_socket() -> None:
    cfg = config()
    env = cfg.stack_env()
    assert env["REDIS_URL"] == f"unix://{cfg.redis_socket}?db=0"
    assert env["REDIS_CLUSTER"] == "0"  # whatever the shell says
    assert "REDIS_CLUSTER_PORT" not in env
    assert redis_cluster_stack.service_env(env) == {}
    assert cfg.redis_kind == "single"


@pytest.mark.parametrize("other", [["--redis-url", "redis://x/0"], ["--base-url", "http://x"]])
def test_the_cluster_is_not_combined_with_another_redis(other: list[str]) -> None:
    with pytest.raises(SystemExit):
        config("--redis-cluster", *other)


def test_the_markdown_says_which_redis() -> None:
    run = {
        "run_id": "r",
        "scale": "0.01",
        "quick": True,
        "gateway_url": "http://127.0.0.1:18080",
        "services": ["reviews"],
        "threads": 2,
        "connections": 64,
        "cpus": 2,
        "redis": "cluster 3+3",
        "redis_detail": {
            "url": "redis://127.0.0.1:16380/0",
            "primaries": [{"node": "127.0.0.1:16380", "slots": 5461, "replicas": ["x:1"]}],
            "at_end": "ok",
        },
        "workloads": [],
        "failures": [],
    }
    text = report.markdown(run)
    assert "Redis: cluster 3+3 (redis://127.0.0.1:16380/0)" in text
    assert "at the end: ok" in text
    del run["redis"]
    assert "Redis:" not in report.markdown(run)
