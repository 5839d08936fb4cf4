"""The local stack (infra/stack.py) with REDIS_CLUSTER=1: six supervisord
programs redis-cluster-<port> on 127.0.0.1:REDIS_CLUSTER_PORT..+5 (7000-7005),
data under run/redis-cluster/<port>/. The cluster is created once; later
`make up`s restart the nodes, which re-form it from their nodes-<port>.conf.
When a node's file is gone (or the nodes do not re-form), every node is reset
and the cluster created again. Every service gets REDIS_CLUSTER=1 and
REDIS_URL=redis://127.0.0.1:7000/0 (a seed node: the cluster client finds the
rest). `make status` prints the cluster's state; `make down` stops it with
the rest.

The nodes, their topology and health: infra/redis_cluster.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from infra.redis_cluster import (
    HOST,
    NODE_TIMEOUT_MS,
    SLOTS,
    answers,
    cluster_info,
    create,
    is_fresh,
    node_command,
    reset,
    seed_url,
    topology,
    wait_answering,
    wait_ok,
)
from infra.stack_settings import flag, int_setting

DEFAULT_PORT = 7000
DEFAULT_PRIMARIES = 3
ProgramFn = Callable[[str, str, dict[str, str], Path], str]
STATE_FILE = "cluster.json"


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    return flag(env, "REDIS_CLUSTER")


def stack_ports(env: Mapping[str, str] = os.environ) -> list[int]:
    base = int_setting(env, "REDIS_CLUSTER_PORT", DEFAULT_PORT)
    return [base + i for i in range(2 * DEFAULT_PRIMARIES)]


def stack_dir(run_dir: Path) -> Path:
    return run_dir / "redis-cluster"


def service_env(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What every service program gets when the stack runs a cluster."""
    if not enabled(env):
        return {}
    return {"REDIS_CLUSTER": "1", "REDIS_URL": seed_url(stack_ports(env)[0])}


def programs(run_dir: Path, program: ProgramFn, env: Mapping[str, str] = os.environ) -> list[str]:
    """REDIS_CLUSTER=1: one supervisord program per node (none otherwise). A
    node whose nodes-<port>.conf is gone would come back fresh next to nodes
    that remember the old cluster: then every node file goes, and stack_up()
    creates the cluster anew."""
    if not enabled(env):
        return []
    ports = stack_ports(env)
    root = stack_dir(run_dir)
    files = [root / str(p) / f"nodes-{p}.conf" for p in ports]
    if not all(f.exists() for f in files):
        for f in files:
            f.unlink(missing_ok=True)
    sections = []
    for port in ports:
        directory = root / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        command = " ".join('""' if arg == "" else arg for arg in node_command(port, directory))
        log = run_dir / "logs" / f"redis-cluster-{port}.log"
        sections.append(program(f"redis-cluster-{port}", command, {}, log))
    (root / STATE_FILE).write_text(json.dumps({"ports": ports, "node_timeout_ms": NODE_TIMEOUT_MS}))
    return sections


def stack_up(run_dir: Path, env: Mapping[str, str] = os.environ, timeout_s: float = 60) -> None:
    """Once supervisord runs the nodes: create the cluster when they are all
    fresh; let them re-form it when they remember it; else (some fresh, some
    not, or not re-forming) reset them all and create it again. Then wait
    until every node is ok."""
    if not enabled(env):
        return
    ports = stack_ports(env)
    wait_answering(ports, timeout_s)
    fresh = [p for p in ports if is_fresh(p)]
    if fresh and len(fresh) < len(ports):
        print(f"[redis-cluster] nodes {fresh} forgot the cluster: creating it again")
        reset(ports)
        fresh = ports
    if not fresh:
        try:
            seconds = wait_ok(ports, 15, expect_nodes=len(ports), whole=True)
            print(f"[redis-cluster] re-formed on {HOST}:{ports[0]}-{ports[-1]} in {seconds:.1f}s")
            return
        except TimeoutError as e:
            print(f"[redis-cluster] {str(e)[:300]}: creating it again")
            reset(ports)
    print(f"[redis-cluster] creating {len(ports) // 2} primaries + {len(ports) // 2} replicas")
    create(ports)
    seconds = wait_ok(ports, timeout_s, expect_nodes=len(ports), whole=True)
    print(f"[redis-cluster] ok on {HOST}:{ports[0]}-{ports[-1]} ({seconds:.1f}s after create)")


def print_urls(env: Mapping[str, str] = os.environ) -> None:
    if enabled(env):
        ports = stack_ports(env)
        print(f"  {'redis':9} {seed_url(ports[0])}  (cluster seed; nodes {ports[0]}-{ports[-1]})")


def stack_status(run_dir: Path) -> None:
    """`make status`: the cluster's state when the stack runs one (whatever
    REDIS_CLUSTER says now: the ports come from the last `up`)."""
    state = stack_dir(run_dir) / STATE_FILE
    conf = run_dir / "supervisord.conf"
    if not (state.exists() and conf.exists() and (run_dir / "supervisor.sock").exists()):
        return
    if "[program:redis-cluster-" not in conf.read_text():
        return
    ports = json.loads(state.read_text())["ports"]
    live = [p for p in ports if answers(p)]
    if not live:
        print(f"redis-cluster {HOST}:{ports[0]}-{ports[-1]}: no node answers")
        return
    info = cluster_info(live[0])
    seen = topology(live[0])
    down = sorted(set(ports) - set(live))
    print(
        f"redis-cluster {HOST}:{ports[0]}-{ports[-1]}: cluster_state:{info.get('cluster_state')} "
        f"slots ok {info.get('cluster_slots_ok')}/{SLOTS}, {len(seen.primaries)} primaries, "
        f"{len(seen.replicas)} replicas" + (f", not answering: {down}" if down else "")
    )
    for line in seen.describe().splitlines():
        print(f"  {line}")
