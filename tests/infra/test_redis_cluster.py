"""Redis Cluster on real servers (infra/redis_cluster*.py, the `redis_cluster`
fixture of tests/redis_cluster_fixture.py): 3 primaries + 3 replicas of the
tests' own on free ports (never the machine's Redis on 6379), reached through
redis-py's asyncio cluster client as the cache will reach it: keys routed by
slot, sharded pub/sub (SSUBSCRIBE / SPUBLISH on a hash-tagged `{ns}:inval`
channel), and a primary killed with SIGKILL: its replica is promoted and the
cluster ok again within FAILOVER_BOUND_S (cluster-node-timeout 1000 ms; measured
about 2-3 s, recorded in run/test-figures.jsonl). Then the local stack's part:
the supervisord programs REDIS_CLUSTER=1 adds, created once, re-formed on the
next `up`, created again when node files are gone; and compose.yaml's
redis-cluster-init script, run on real nodes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import yaml
from redis.asyncio.cluster import RedisCluster

from infra import redis_cluster as rc
from infra import redis_cluster_stack as rcs
from infra import stack
from infra.redis_cluster_subprocesses import Cluster
from tests.conftest import ROOT
from tests.redis_cluster_fixture import free_port_block, free_ports, redis_cluster  # noqa: F401
from tests.reliability.harness import record_figures

# Node timeout 1 s, then 0.5-1 s election delay, gossip: 2-3 s measured. The
# bound leaves room for a loaded machine.
FAILOVER_BOUND_S = 10.0
CHANNEL = "{runway-test}:inval"  # the hash tag puts it in one slot, like the cache's keys


def test_cluster_nodes_lines_are_parsed() -> None:
    text = (
        "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
        "b2 127.0.0.1:7003@17003 slave a1 0 1700000000000 1 connected\n"
        "c3 127.0.0.1:7001@17001,host.example master,fail - 1 0 2 disconnected\n"
        "d4 127.0.0.1:7004@17004 master - 0 0 7 connected 5461-10922 16383 [42->-e5]\n"
    )
    topology = rc.Topology(tuple(rc.parse_nodes(text)))
    assert [n.port for n in topology.primaries] == [7000, 7004]  # c3 serves no slot
    assert topology.node(7004).slots == ((5461, 10922), (16383, 16383))
    assert topology.node(7001).failed and not topology.node(7000).failed
    assert topology.replicas_of(topology.node(7000)) == [topology.node(7003)]
    assert topology.primary_for(16383).port == 7004
    assert topology.node(7000).bus_port == 17000
    assert topology.slots_covered == 5461 + 5462 + 1


def test_a_3_plus_3_cluster_comes_up_ok(redis_cluster: Cluster) -> None:  # noqa: F811
    topology = redis_cluster.topology()
    assert len(topology.primaries) == 3 and len(topology.replicas) == 3
    assert topology.slots_covered == rc.SLOTS
    for primary in topology.primaries:
        assert len(topology.replicas_of(primary)) == 1
    for port in redis_cluster.ports:
        info = rc.cluster_info(port)
        assert info["cluster_state"] == "ok", (port, info)
        assert info["cluster_slots_ok"] == str(rc.SLOTS)
        assert info["cluster_known_nodes"] == "6"
    assert rc.problems(redis_cluster.ports, expect_nodes=6, whole=True) == []
    assert redis_cluster.seed_url() == f"redis://127.0.0.1:{redis_cluster.ports[0]}/0"


async def test_keys_set_through_the_cluster_client_are_read_back(
    redis_cluster: Cluster,  # noqa: F811
) -> None:
    client = RedisCluster.from_url(redis_cluster.seed_url(), socket_timeout=2)
    try:
        keys = [f"runway-test:key:{i}" for i in range(60)]
        for key in keys:
            assert await client.set(key, key.encode())
        assert [await client.get(key) for key in keys] == [k.encode() for k in keys]
        topology = redis_cluster.topology()
        owners = {topology.primary_for(rc.key_slot(k)).port for k in keys}
        assert len(owners) == 3  # spread over every primary
        # A hash tag keeps a namespace's keys in one slot: multi-key commands work.
        tagged = ["{runway-test}:a", "{runway-test}:b"]
        assert len({rc.key_slot(k) for k in tagged}) == 1
        assert client.keyslot(tagged[0]) == rc.key_slot(tagged[0])
        await client.mset({tagged[0]: b"1", tagged[1]: b"2"})
        assert await client.mget(tagged) == [b"1", b"2"]
    finally:
        await client.aclose()
    # The key lives on its slot's primary; any other primary redirects.
    owner = topology.primary_for(rc.key_slot(keys[0]))
    assert rc.client(owner.port).get(keys[0]) == keys[0]
    other = next(p for p in topology.primaries if p.port != owner.port)
    with pytest.raises(redis.exceptions.MovedError) as moved:
        rc.client(other.port).get(keys[0])
    assert moved.value.node_addr == ("127.0.0.1", owner.port)


async def _sharded_messages(pubsub, count: int, timeout_s: float = 5) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        try:
            message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.2)
        except redis.ConnectionError:
            # After a failover the dead primary's per-node pubsub stays in the
            # round-robin (it is still listed, flagged fail) and fails to reconnect.
            await asyncio.sleep(0.05)
            continue
        if message is not None and message["type"] == "smessage":
            got.append(message["data"])
    return got


async def test_sharded_pubsub_delivers_in_order(redis_cluster: Cluster) -> None:  # noqa: F811
    client = RedisCluster.from_url(redis_cluster.seed_url(), socket_timeout=2)
    # ssubscribe() routes by the client's slot map and does not load it itself
    # (SlotNotCoveredError on a client that has sent nothing yet).
    await client.initialize()
    pubsub = client.pubsub()
    try:
        await pubsub.ssubscribe(CHANNEL)
        confirmation = await pubsub.get_sharded_message(timeout=2)
        assert confirmation is not None and confirmation["type"] == "ssubscribe"
        # The subscription sits on the primary of the channel's slot, only there.
        owner = redis_cluster.topology().primary_for(rc.key_slot(CHANNEL))
        for primary in redis_cluster.topology().primaries:
            channels = rc.client(primary.port).execute_command("PUBSUB", "SHARDCHANNELS")
            assert (CHANNEL in channels) is (primary.port == owner.port)
        sent = [f"inval:{i}".encode() for i in range(200)]
        for message in sent:
            assert await client.spublish(CHANNEL, message) == 1  # one receiver: us
        assert await _sharded_messages(pubsub, len(sent)) == sent
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_killing_a_primary_promotes_its_replica(redis_cluster: Cluster) -> None:  # noqa: F811
    key = "{runway-test}:survives"
    before = redis_cluster.topology()
    primary = before.primary_for(rc.key_slot(CHANNEL))
    [replica] = before.replicas_of(primary)
    client = RedisCluster.from_url(redis_cluster.seed_url(), socket_timeout=0.5)
    pubsub = client.pubsub()
    try:
        await client.set(key, b"written before")
        # Replication is asynchronous: make sure the replica has the write.
        assert rc.client(primary.port).execute_command("WAIT", 1, 2000) == 1
        await pubsub.ssubscribe(CHANNEL)
        assert (await pubsub.get_sharded_message(timeout=2))["type"] == "ssubscribe"

        failover = await asyncio.to_thread(redis_cluster.kill_primary, primary.port)
        assert failover.killed.port == primary.port
        assert failover.promoted.port == replica.port
        # What the cluster took, less any stall of this machine: a CI run once
        # had this process held ~45 s past its deadline (stall_watch reports it).
        assert failover.ok_running_s < FAILOVER_BOUND_S, (
            f"{failover.describe()}\n{redis_cluster.log_tails()}"
        )
        after = redis_cluster.topology()
        assert after.primary_for(rc.key_slot(CHANNEL)).port == replica.port
        assert after.slots_covered == rc.SLOTS and len(after.primaries) == 3

        # The cluster client finds the new primary (its first call may fail
        # on the dead node, then it refreshes its slot map).
        deadline = time.monotonic() + 10
        value, errors = None, []
        while value is None and time.monotonic() < deadline:
            try:
                value = await client.get(key)
            except (redis.ConnectionError, redis.TimeoutError, redis.ClusterDownError) as e:
                errors.append(type(e).__name__)
        assert value == b"written before", errors
        # The subscription moves to the new primary once the client's slot map
        # is refreshed: SPUBLISH counts a receiver there again, then delivers.
        receivers = 0
        while receivers == 0 and time.monotonic() < deadline:
            receivers = await client.spublish(CHANNEL, b"after failover")
            if receivers == 0:
                await asyncio.sleep(0.05)
        assert receivers == 1
        assert await _sharded_messages(pubsub, 1) == [b"after failover"]
    finally:
        await pubsub.aclose()
        await client.aclose()
        healed_s = await asyncio.to_thread(redis_cluster.heal)
    record_figures(
        "redis_cluster[failover]",
        {
            "node_timeout_ms": redis_cluster.node_timeout_ms,
            "promoted_s": round(failover.promoted_s, 3),
            "ok_s": round(failover.ok_s, 3),
            "stalled_s": round(failover.stalled_s, 3),
            "rejoined_s": round(healed_s, 3),
            "client_errors": len(errors),
        },
    )
    # The old primary is back, as a replica of the node that took its slots.
    healed = redis_cluster.topology()
    assert healed.node(primary.port).primary_id == healed.node(replica.port).id
    assert rc.problems(redis_cluster.ports, expect_nodes=6, whole=True) == []


# --- the local stack (REDIS_CLUSTER=1) ---------------------------------------------------


def test_the_services_get_the_seed_node_and_the_cluster_flag(monkeypatch) -> None:
    monkeypatch.setenv("REVIEWS_DATABASE_URL", "postgresql://app@db.internal:5432/reviews")
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)
    (program,) = stack.service_programs(["reviews"])
    assert "REDIS_CLUSTER" not in program and "REDIS_URL" not in program
    monkeypatch.setenv("REDIS_CLUSTER", "1")
    monkeypatch.setenv("REDIS_CLUSTER_PORT", "7100")
    (program,) = stack.service_programs(["reviews"])
    assert 'REDIS_CLUSTER="1"' in program
    assert 'REDIS_URL="redis://127.0.0.1:7100/0"' in program
    assert rcs.stack_ports({"REDIS_CLUSTER": "1"}) == list(range(7000, 7006))
    assert rcs.programs(Path("/nonexistent"), stack._program, {}) == []


def _supervisord(run_dir: Path, sections: list[str]) -> Path:
    conf = run_dir / "supervisord.conf"
    conf.write_text(
        f"""
[unix_http_server]
file={run_dir / "supervisor.sock"}

[supervisord]
logfile={run_dir / "logs" / "supervisord.log"}
pidfile={run_dir / "supervisord.pid"}
childlogdir={run_dir / "logs"}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{run_dir / "supervisor.sock"}
"""
        + "".join(sections)
    )
    return conf


def test_the_stack_creates_the_cluster_once_and_again_when_node_files_are_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = free_port_block(6)
    env = {"REDIS_CLUSTER": "1", "REDIS_CLUSTER_PORT": str(base)}
    ports = rcs.stack_ports(env)
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    conf = _supervisord(run_dir, rcs.programs(run_dir, stack._program, env))
    bin_dir = Path(sys.executable).parent

    def ctl(*args: str) -> str:
        result = subprocess.run(
            [str(bin_dir / "supervisorctl"), "-c", str(conf), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout + result.stderr

    def up_output() -> str:
        capsys.readouterr()
        rcs.stack_up(run_dir, env, timeout_s=30)
        return capsys.readouterr().out

    subprocess.run([str(bin_dir / "supervisord"), "-c", str(conf)], check=True)
    try:
        assert "creating 3 primaries + 3 replicas" in up_output()
        assert rc.problems(ports, expect_nodes=6, whole=True) == []

        # The next `up`: the nodes restart and re-form the cluster themselves.
        ids = {p: rc.topology(p).node(p).id for p in ports}
        ctl("restart", "all")
        assert "re-formed" in up_output()
        assert {p: rc.topology(p).node(p).id for p in ports} == ids

        rcs.stack_status(run_dir)
        status = capsys.readouterr().out
        assert "cluster_state:ok" in status and f"slots ok {rc.SLOTS}/{rc.SLOTS}" in status
        assert "3 primaries, 3 replicas" in status

        # One node forgets the cluster (its file gone while it is down): all are
        # reset and the cluster created again.
        ctl("stop", f"redis-cluster-{ports[4]}")
        (run_dir / "redis-cluster" / str(ports[4]) / f"nodes-{ports[4]}.conf").unlink()
        ctl("start", f"redis-cluster-{ports[4]}")
        assert "forgot the cluster: creating it again" in up_output()
        assert rc.problems(ports, expect_nodes=6, whole=True) == []
        assert all(rc.topology(p).node(p).id != ids[p] for p in ports)

        # `make up` after a node file went missing while all were down: the
        # programs() step removes every node file, so the nodes start fresh.
        ctl("stop", "all")
        (run_dir / "redis-cluster" / str(ports[1]) / f"nodes-{ports[1]}.conf").unlink()
        rcs.programs(run_dir, stack._program, env)
        assert not any((run_dir / "redis-cluster").glob("*/nodes-*.conf"))
        ctl("start", "all")
        assert "creating 3 primaries" in up_output()
        assert rc.problems(ports, expect_nodes=6, whole=True) == []
    finally:
        pid = int((run_dir / "supervisord.pid").read_text())
        ctl("shutdown")
        deadline = time.monotonic() + 30
        while stack.process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not any(rc.answers(p) for p in ports)


def test_the_compose_init_script_creates_the_cluster_once(tmp_path: Path) -> None:
    """compose.yaml's redis-cluster-init, as compose hands it to sh, over six
    fresh nodes named like its NODES (a name, resolved, and a port)."""
    init = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["redis-cluster-init"]
    script = init["command"][-1].replace("$$", "$")
    picked = free_ports(12)
    ports, buses = picked[:6], picked[6:]
    cluster = Cluster(tmp_path, tuple(ports), bus_ports=dict(zip(ports, buses, strict=True)))
    env = {**os.environ, "NODES": " ".join(f"localhost:{p}" for p in cluster.ports)}
    try:
        for port in cluster.ports:
            cluster.spawn(port)
        rc.wait_answering(cluster.ports)
        first = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert first.returncode == 0, first.stdout + first.stderr
        rc.wait_ok(cluster.ports, 30, expect_nodes=6, whole=True)
        topology = cluster.topology()
        assert len(topology.primaries) == 3 and len(topology.replicas) == 3
        again = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 0 and "already created" in again.stdout, again.stdout
    finally:
        cluster.stop()
