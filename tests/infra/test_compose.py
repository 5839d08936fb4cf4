"""compose.yaml: valid against the compose-spec schema (the copy that ships
inside check-jsonschema, so this runs offline) and consistent with the code's
settings: ports, database per service, Redis, healthchecks, and each service
deployable alone with only its database and Redis."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from services.common import settings as cfg
from tests.conftest import ROOT

COMPOSE = ROOT / "compose.yaml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_valid_against_the_compose_spec() -> None:
    result = check_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_does_reject_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    text = COMPOSE.read_text().replace("condition: service_healthy", "condition: when_ready", 1)
    broken.write_text(text)
    assert check_schema(broken).returncode != 0


def closure(services: dict, name: str) -> set[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        for dep in services[stack.pop()].get("depends_on", {}):
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_service_matches_the_settings(service: str) -> None:
    services = load()["services"]
    svc = services[service]
    port = cfg.BASE_PORTS[service]
    env = svc["environment"]
    assert env["PORT"] == str(port) and env["HOST"] == "0.0.0.0"
    assert svc["expose"] == [str(port)]
    assert f"127.0.0.1:{port}/readyz" in " ".join(svc["healthcheck"]["test"])
    db_url = urlparse(env[f"{service.upper()}_DATABASE_URL"])
    default_db = urlparse(cfg.default_database_url(service)).path
    assert db_url.hostname == f"{service}-db" and db_url.port == 5432
    assert db_url.path == default_db
    db = services[f"{service}-db"]
    assert db["environment"]["POSTGRES_DB"] == default_db.lstrip("/")
    assert urlparse(env["REDIS_URL"]).hostname == "redis"
    # One Dockerfile for every service, told which by its build args.
    assert svc["build"]["dockerfile"] == "services/Dockerfile"
    assert (ROOT / svc["build"]["dockerfile"]).exists()
    assert svc["build"]["args"] == {"SERVICE": service, "PORT": str(port)}


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_each_service_deploys_alone_with_its_db_and_redis(service: str) -> None:
    services = load()["services"]
    assert closure(services, service) == {f"{service}-db", f"{service}-migrate", "redis"}
    for name, dep in services[service]["depends_on"].items():
        done = "service_completed_successfully" if name.endswith("-migrate") else "service_healthy"
        assert dep["condition"] == done


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_each_service_starts_after_its_migrate_step(service: str) -> None:
    """<service>-migrate: the service's own image, run once to completion, the
    migrating role directly on the database; the service itself connects as the
    app role it grants (services/common/migrate.py)."""
    services = load()["services"]
    svc, migrate = services[service], services[f"{service}-migrate"]
    assert migrate["image"] == svc["image"] and migrate["build"] == svc["build"]
    assert migrate["restart"] == "no" and "healthcheck" not in migrate
    assert migrate["command"] == ["python", "-m", "services.common.migrate", service]
    assert migrate["depends_on"] == {f"{service}-db": {"condition": "service_healthy"}}
    env = migrate["environment"]
    direct = urlparse(env[f"{service.upper()}_MIGRATE_DATABASE_URL"])
    assert (direct.username, direct.hostname, direct.port) == ("postgres", f"{service}-db", 5432)
    serving = env[f"{service.upper()}_DATABASE_URL"]
    assert serving == svc["environment"][f"{service.upper()}_DATABASE_URL"]
    assert urlparse(serving).username == f"runway_{service}"
    assert urlparse(serving).path == direct.path


def test_each_database_has_its_own_volume() -> None:
    config = load()
    volumes = [config["services"][f"{s}-db"]["volumes"][0].split(":")[0] for s in cfg.SERVICES]
    assert len(set(volumes)) == len(cfg.SERVICES)
    assert set(volumes) <= set(config["volumes"])


def test_every_long_running_container_has_a_healthcheck() -> None:
    for name, svc in load()["services"].items():
        if svc.get("restart") != "no":  # the one-shot migrate steps
            assert "healthcheck" in svc, name


def test_gateway_publishes_the_gateway_port_and_waits_for_all_services() -> None:
    gateway = load()["services"]["gateway"]
    [port] = gateway["ports"]
    assert re.fullmatch(rf"127\.0\.0\.1:\$\{{GATEWAY_PORT:-{cfg.GATEWAY_PORT}\}}:8080", port)
    assert set(gateway["depends_on"]) == {*cfg.SERVICES, "photos"}
    assert all(d["condition"] == "service_healthy" for d in gateway["depends_on"].values())
    assert gateway["build"]["dockerfile"] == "gateway/Dockerfile"


def test_gateway_image_upstreams_are_the_compose_services() -> None:
    dockerfile = (ROOT / "gateway" / "Dockerfile").read_text()
    services = load()["services"]
    for service in cfg.SERVICES:
        upstream = f"{service.upper()}_UPSTREAM={service}:{cfg.BASE_PORTS[service]}"
        assert upstream in dockerfile
        assert service in services


def test_prometheus_mounts_the_checked_in_config() -> None:
    prometheus = load()["services"]["prometheus"]
    assert "./infra/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
