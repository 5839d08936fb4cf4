"""Redis Cluster nodes for the local stack and the tests: N primaries with
one replica each (3+3 by default), on 127.0.0.1, made with `redis-cli
--cluster create`, their topology read from CLUSTER NODES, their health
checked, and one killed.

Each node is `redis-server --cluster-enabled yes` with its own directory
(<root>/<port>/: nodes-<port>.conf, the node's log), nothing persisted (a
cache: `--save "" --appendonly no`), in the foreground (a subprocess owned by
the caller, or a supervisord program). Its cluster bus listens on port + 10000
unless a bus port is given (the tests pick free ones).

Timing. `cluster-node-timeout` (NODE_TIMEOUT_MS, 1000 ms here; Redis's
default is 15000) is how long a node may go unanswered before the others flag
it PFAIL; once a majority of primaries agree it is FAIL, and its replica
starts an election after 500 ms + a random 0-500 ms (+ 1 s per rank behind
the best replica). So a killed primary's slots are served again after about
node timeout + 1-2 s; with 1000 ms, tests/infra/test_redis_cluster.py measures
it (about 2-3 s on a quiet machine) and bounds it. Until then the cluster
answers CLUSTERDOWN for every key (`cluster-require-full-coverage yes`, the
default) and the client sees errors. A managed cluster keeps its provider's
timeout (ElastiCache: 15 s; infra/k8s/REDIS.md).

`cluster-replica-validity-factor 0`: a replica always stands for election,
however long it has been cut off from its primary: for a cache, serving
slightly stale (or empty) entries beats leaving slots uncovered.
`repl-diskless-sync-delay 0`: a replica (re)joining is synced at once rather
than after Redis's default 5 s wait for more replicas to share the transfer.

The tests' own cluster of subprocesses and its failover:
infra/redis_cluster_subprocesses.py; the local stack's: infra/redis_cluster_stack.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SLOTS = 16384
HOST = "127.0.0.1"
NODE_TIMEOUT_MS = 1000


def binary(name: str = "redis-server") -> str:
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).exists():
        raise RuntimeError(f"{name} missing: run `bash infra/ensure-deps.sh redis`")
    return found


def node_command(
    port: int,
    directory: Path,
    *,
    node_timeout_ms: int = NODE_TIMEOUT_MS,
    bus_port: int | None = None,
) -> list[str]:
    """The redis-server command line of one cluster node (foreground)."""
    command = [
        binary("redis-server"),
        "--port", str(port),
        "--bind", HOST,
        "--cluster-enabled", "yes",
        "--cluster-config-file", f"nodes-{port}.conf",
        "--cluster-node-timeout", str(node_timeout_ms),
        "--cluster-replica-validity-factor", "0",
        "--repl-diskless-sync-delay", "0",
        "--appendonly", "no",
        "--save", "",
        "--dir", str(directory),
        "--daemonize", "no",
    ]  # fmt: skip
    if bus_port is not None:
        command += ["--cluster-port", str(bus_port)]
    return command


def seed_url(port: int) -> str:
    """What a cluster client is given: one node; it discovers the others."""
    return f"redis://{HOST}:{port}/0"


# --- reading a node ----------------------------------------------------------------


def client(port: int, timeout_s: float = 1.0) -> redis.Redis:
    """A plain client of one node, without redis-py's default retries (10,
    backing off up to 1 s each: seconds before a dead node is reported)."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def _raw(port: int, *args: str, timeout_s: float = 1.0) -> str:
    """A command whose reply is text (no redis-py callback: its first word is
    the command name redis-py looks callbacks up by)."""
    conn = client(port, timeout_s)
    try:
        return conn.execute_command(*args)
    finally:
        conn.close()


def answers(port: int) -> bool:
    try:
        return bool(client(port, 0.5).ping())
    except (redis.RedisError, OSError):
        return False


def cluster_info(port: int) -> dict[str, str]:
    """CLUSTER INFO of one node, e.g. cluster_state, cluster_slots_ok."""
    text = _raw(port, "CLUSTER", "INFO")
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def replication_info(port: int) -> dict[str, str]:
    text = _raw(port, "INFO", "replication")
    if isinstance(text, dict):  # redis-py parsed it
        return {k: str(v) for k, v in text.items()}
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


@dataclass(frozen=True)
class Node:
    """One line of CLUSTER NODES."""

    id: str
    host: str
    port: int
    bus_port: int
    flags: frozenset[str]
    primary_id: str | None  # a replica's primary; None for a primary
    link: str  # connected / disconnected
    slots: tuple[tuple[int, int], ...]  # inclusive ranges

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool({"fail", "fail?", "noaddr"} & self.flags)

    @property
    def slot_count(self) -> int:
        return sum(end - start + 1 for start, end in self.slots)

    def owns(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.slots)


def parse_nodes(text: str) -> list[Node]:
    nodes = []
    for line in text.strip().splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split(",", 1)[0]  # ip:port@cport[,hostname]
        hostport, _, bus = address.partition("@")
        host, _, port = hostport.rpartition(":")
        slots = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot migrating or importing
                continue
            start, _, end = item.partition("-")
            slots.append((int(start), int(end or start)))
        nodes.append(
            Node(
                id=fields[0],
                host=host,
                port=int(port),
                bus_port=int(bus or 0),
                flags=frozenset(fields[2].split(",")),
                primary_id=None if fields[3] == "-" else fields[3],
                link=fields[7],
                slots=tuple(sorted(slots)),
            )
        )
    return nodes


@dataclass(frozen=True)
class Topology:
    """The cluster as one node sees it."""

    nodes: tuple[Node, ...]

    @property
    def primaries(self) -> list[Node]:
        """The primaries serving slots (a failed ex-primary has none)."""
        return sorted((n for n in self.nodes if n.is_primary and n.slots), key=lambda n: n.port)

    @property
    def replicas(self) -> list[Node]:
        return sorted((n for n in self.nodes if not n.is_primary), key=lambda n: n.port)

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def by_id(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def primary_for(self, slot: int) -> Node:
        return next(n for n in self.nodes if n.is_primary and n.owns(slot))

    def replicas_of(self, primary: Node) -> list[Node]:
        return [n for n in self.replicas if n.primary_id == primary.id]

    @property
    def slots_covered(self) -> int:
        return sum(n.slot_count for n in self.primaries if not n.failed)

    def describe(self) -> str:
        lines = []
        for primary in self.primaries:
            ranges = " ".join(f"{a}-{b}" if a != b else str(a) for a, b in primary.slots)
            replicas = ", ".join(
                r.address + (" (failed)" if r.failed else "") for r in self.replicas_of(primary)
            )
            state = " FAILED" if primary.failed else ""
            lines.append(
                f"{primary.address}{state} slots {ranges} ({primary.slot_count}); "
                f"replicas: {replicas or 'none'}"
            )
        for node in self.nodes:
            if node.is_primary and not node.slots:
                lines.append(
                    f"{node.address} primary without slots ({','.join(sorted(node.flags))})"
                )
        return "\n".join(lines)


def topology(port: int) -> Topology:
    return Topology(tuple(parse_nodes(_raw(port, "CLUSTER", "NODES"))))


def key_slot(key: str | bytes) -> int:
    """The slot a key (or a shard channel) hashes to, hash tags honoured."""
    from redis.crc import key_slot as _key_slot

    return _key_slot(key.encode() if isinstance(key, str) else key)


# --- health ----------------------------------------------------------------------------


def problems(
    ports: Iterable[int], *, expect_nodes: int | None = None, whole: bool = False
) -> list[str]:
    """Why the cluster is not healthy as seen from every one of `ports` (all
    expected to answer); empty when every node says cluster_state:ok with all
    16384 slots assigned and ok, knows `expect_nodes` nodes, every replica
    among them has its link to its primary up, and all of them see the same
    primary for every slot. `whole`: besides, no node is flagged failing in
    any view and every primary has a replica (not so right after a failover:
    the dead node is flagged fail, the promoted one has no replica)."""
    found: list[str] = []
    maps: dict[int, frozenset[tuple[str, tuple[tuple[int, int], ...]]]] = {}
    for port in ports:
        try:
            info = cluster_info(port)
            replication = replication_info(port)
            seen = topology(port)
        except (redis.RedisError, OSError) as e:
            found.append(f"{port}: {type(e).__name__}: {e}")
            continue
        state = info.get("cluster_state")
        if state != "ok":
            found.append(f"{port}: cluster_state:{state}")
        for name in ("cluster_slots_assigned", "cluster_slots_ok"):
            if info.get(name) != str(SLOTS):
                found.append(f"{port}: {name}:{info.get(name)}")
        if expect_nodes is not None and info.get("cluster_known_nodes") != str(expect_nodes):
            found.append(f"{port}: cluster_known_nodes:{info.get('cluster_known_nodes')}")
        if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
            found.append(f"{port}: replica link {replication.get('master_link_status')}")
        maps[port] = frozenset((n.address, n.slots) for n in seen.primaries)
        if whole:
            failing = [f"{n.address}({','.join(sorted(n.flags))})" for n in seen.nodes if n.failed]
            if failing:
                found.append(f"{port}: sees failing {', '.join(failing)}")
            lonely = [n.address for n in seen.primaries if not seen.replicas_of(n)]
            if lonely:
                found.append(f"{port}: sees primaries without a replica {', '.join(lonely)}")
    if len(set(maps.values())) > 1:
        found.append("the nodes disagree on which primary serves which slots")
    return found


def wait_ok(
    ports: Sequence[int],
    timeout_s: float = 30,
    *,
    expect_nodes: int | None = None,
    whole: bool = False,
    interval_s: float = 0.05,
) -> float:
    """Poll every node until problems() is empty; the seconds it took.
    TimeoutError with what is still wrong past the deadline."""
    start = time.monotonic()
    while True:
        found = problems(ports, expect_nodes=expect_nodes, whole=whole)
        if not found:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"cluster not ok after {timeout_s}s: {'; '.join(found[:8])}")
        time.sleep(interval_s)


def wait_answering(ports: Iterable[int], timeout_s: float = 15, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(ports)
    while pending:
        pending = [p for p in pending if not answers(p)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis nodes not answering on {pending} after {timeout_s}s")
        time.sleep(interval_s)


def is_fresh(port: int) -> bool:
    """A node that has joined no cluster: it knows only itself, owns no slot."""
    info = cluster_info(port)
    return info.get("cluster_known_nodes") == "1" and info.get("cluster_slots_assigned") == "0"


def create(ports: Sequence[int], replicas: int = 1, timeout_s: float = 60) -> None:
    """`redis-cli --cluster create` over fresh nodes: the first len/(1+replicas)
    ports become primaries (redis-cli may swap some to keep a primary and its
    replica apart), the slots split evenly among them."""
    command = [binary("redis-cli"), "--cluster", "create"]
    command += [f"{HOST}:{port}" for port in ports]
    command += ["--cluster-replicas", str(replicas), "--cluster-yes"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0 or "[ERR]" in result.stdout:
        raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}")


def reset(ports: Iterable[int]) -> None:
    """Make every node fresh again (a node holding keys refuses a hard reset:
    FLUSHALL first; a replica refuses FLUSHALL, and CLUSTER RESET turns it
    into an empty primary first)."""
    for port in ports:
        conn = client(port, 5)
        try:
            try:
                conn.execute_command("FLUSHALL")
            except redis.ResponseError:
                conn.execute_command("CLUSTER", "RESET", "SOFT")
                conn.execute_command("FLUSHALL")
            conn.execute_command("CLUSTER", "RESET", "HARD")
        finally:
            conn.close()


def kill_node(port: int, how: str = "sigkill") -> int:
    """Kill a node abruptly: SIGKILL to the pid it reports (INFO server), or
    `SHUTDOWN NOSAVE NOW` (no waiting for replicas to catch up). The pid."""
    info = client(port).info("server")
    pid = int(info["process_id"])
    if how == "sigkill":
        os.kill(pid, signal.SIGKILL)
    elif how == "shutdown":
        try:
            _raw(port, "SHUTDOWN", "NOSAVE", "NOW")
        except (redis.ConnectionError, OSError):
            pass  # it closes the connection as it exits
    else:
        raise ValueError(f"unknown way to kill a node: {how!r}")
    return pid
