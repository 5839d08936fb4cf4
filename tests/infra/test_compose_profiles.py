"""compose.yaml's optional profiles: `replica` (a streaming replica of each
service's database, made with pg_basebackup from it), `pooler` (PgBouncer in
transaction mode in front of the databases) and `redis-cluster` (a Redis
Cluster of 3 primaries + 3 replicas and its one-shot create; the script itself
runs on real nodes in tests/infra/test_redis_cluster.py). A plain `docker
compose up` starts none; the services read <SERVICE>_REPLICA_URLS, empty by
default. The schema check itself is tests/infra/test_compose.py's."""

from __future__ import annotations

import configparser
from urllib.parse import urlparse

import pytest
import yaml

from infra import pgbouncer
from services.common import settings as cfg
from tests.conftest import ROOT

COMPOSE = ROOT / "compose.yaml"
CLUSTER_NODES = [f"redis-cluster-{i}" for i in range(6)]


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_default_profile_starts_neither_replicas_nor_the_pooler_nor_the_cluster() -> None:
    services = load()["services"]
    optional = {name: svc["profiles"] for name, svc in services.items() if "profiles" in svc}
    expected = {f"{s}-db-replica": ["replica"] for s in cfg.SERVICES} | {"pgbouncer": ["pooler"]}
    expected |= {name: ["redis-cluster"] for name in [*CLUSTER_NODES, "redis-cluster-init"]}
    assert optional == expected


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_each_database_has_a_replica_made_from_it(service: str) -> None:
    config = load()
    replica = config["services"][f"{service}-db-replica"]
    assert replica["depends_on"] == {f"{service}-db": {"condition": "service_healthy"}}
    assert replica["environment"]["PRIMARY"] == f"{service}-db"
    script = replica["command"][-1].replace("$$", "$")  # as compose hands it to sh
    assert "pg_basebackup" in script and '-h "$PRIMARY"' in script
    assert all(flag in script.split() for flag in ("-R", "-X", "stream"))
    assert "recovery_min_apply_delay" in script and "hot_standby=on" in script
    assert replica["image"] == config["services"][f"{service}-db"]["image"]
    volume = replica["volumes"][0].split(":")[0]
    assert volume == f"{service}-db-replica" and volume in config["volumes"]
    assert "pg_isready" in " ".join(replica["healthcheck"]["test"])


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_each_service_takes_replica_urls_empty_by_default(service: str) -> None:
    env = load()["services"][service]["environment"]
    name = f"{service.upper()}_REPLICA_URLS"
    assert env[name] == f"${{{name}:-}}"


def test_the_primaries_let_replication_in() -> None:
    config = load()
    hba_script = config["configs"]["replication-hba"]["content"]
    assert "host replication all all scram-sha-256" in hba_script
    for service in cfg.SERVICES:
        mounts = config["services"][f"{service}-db"]["configs"]
        assert {
            "source": "replication-hba",
            "target": "/docker-entrypoint-initdb.d/10-replication-hba.sh",
        } in mounts


def test_the_pooler_is_pgbouncer_in_transaction_mode_for_every_database() -> None:
    config = load()
    bouncer = config["services"]["pgbouncer"]
    ini = configparser.ConfigParser()
    ini.read_string(config["configs"]["pgbouncer-ini"]["content"])
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    assert ini["pgbouncer"]["listen_port"] == str(pgbouncer.DEFAULT_PORT)
    assert bouncer["expose"] == [str(pgbouncer.DEFAULT_PORT)]
    # Timeouts are never dropped silently: the same list as the local stack's.
    ignored = ini["pgbouncer"]["ignore_startup_parameters"].split(",")
    assert ignored == list(pgbouncer.IGNORE_STARTUP_PARAMETERS)
    for service in cfg.SERVICES:
        database = urlparse(cfg.default_database_url(service)).path.lstrip("/")
        assert ini["databases"][database] == f"host={service}-db port=5432"
        assert bouncer["depends_on"][f"{service}-db"] == {"condition": "service_healthy"}
    assert ini["pgbouncer"]["auth_file"] == "/etc/pgbouncer/userlist.txt"
    targets = {c["source"]: c["target"] for c in bouncer["configs"]}
    assert targets == {
        "pgbouncer-ini": bouncer["command"][-1],
        "pgbouncer-users": "/etc/pgbouncer/userlist.txt",
    }
    assert "pgbouncer" in bouncer["build"]["dockerfile_inline"]
    assert "USER postgres" in bouncer["build"]["dockerfile_inline"]  # it refuses root


def _flags(command: list[str]) -> dict[str, str]:
    return {command[i]: command[i + 1] for i in range(1, len(command) - 1, 2)}


def test_the_redis_cluster_profile_runs_six_bounded_cluster_nodes() -> None:
    services = load()["services"]
    for name in CLUSTER_NODES:
        node = services[name]
        assert node["image"] == services["redis"]["image"]
        assert node["command"][0] == "redis-server"
        flags = _flags(node["command"])
        assert flags["--cluster-enabled"] == "yes"
        assert int(flags["--cluster-node-timeout"]) <= 15000
        # A cache: nothing persisted, bounded, evicting rather than refusing writes.
        assert flags["--save"] == "" and flags["--appendonly"] == "no"
        assert flags["--maxmemory"] and flags["--maxmemory-policy"] == "allkeys-lru"
        assert "redis-cli" in node["healthcheck"]["test"]


def test_the_cluster_is_created_once_every_node_answers() -> None:
    init = load()["services"]["redis-cluster-init"]
    assert init["restart"] == "no" and "healthcheck" not in init
    assert init["depends_on"] == {n: {"condition": "service_healthy"} for n in CLUSTER_NODES}
    assert init["environment"]["NODES"].split() == [f"{n}:6379" for n in CLUSTER_NODES]
    script = init["command"][-1].replace("$$", "$")
    assert "redis-cli --cluster create $addresses --cluster-replicas 1 --cluster-yes" in script
    assert "cluster_known_nodes:1" in script  # nothing to do once the cluster exists


def test_the_services_are_told_how_to_use_the_cluster() -> None:
    """The services keep the plain Redis by default; the comment on their
    environment says what the redis-cluster profile needs (a seed node)."""
    text = COMPOSE.read_text()
    hint = "REDIS_CLUSTER=1, REDIS_URL=redis://redis-cluster-0:6379/0"
    assert text.count(hint) == len(cfg.SERVICES)
    for service in cfg.SERVICES:
        env = load()["services"][service]["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379/0" and "REDIS_CLUSTER" not in env
