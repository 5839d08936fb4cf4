"""Redis Cluster for the local stack and the tests: N primaries with one
replica each (3+3 by default), on 127.0.0.1, made with `redis-cli --cluster
create`, its topology read from CLUSTER NODES, and a primary killed to watch
its replica take over.

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

The local stack (infra/stack.py) with REDIS_CLUSTER=1: six supervisord
programs redis-cluster-<port> on 127.0.0.1:REDIS_CLUSTER_PORT..+5 (7000-7005),
data under run/redis-cluster/<port>/. The cluster is created once; later
`make up`s restart the nodes, which re-form it from their nodes-<port>.conf.
When a node's file is gone (or the nodes do not re-form), every node is reset
and the cluster created again. Every service gets REDIS_CLUSTER=1 and
REDIS_URL=redis://127.0.0.1:7000/0 (a seed node: the cluster client finds the
rest). `make status` prints the cluster's state; `make down` stops it with
the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra.stack_settings import flag, int_setting
from infra.stall_watch import StallWatch

SLOTS = 16384
HOST = "127.0.0.1"
NODE_TIMEOUT_MS = 1000
DEFAULT_PORT = 7000
DEFAULT_PRIMARIES = 3


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


@dataclass(frozen=True)
class Failover:
    killed: Node
    promoted: Node
    promoted_s: float  # kill -> the replica a primary owning the slots (as it says)
    ok_s: float  # kill -> every surviving node cluster_state:ok, all slots ok
    stalled_s: float = 0.0  # of ok_s, the time this process could not run (stall_watch)

    @property
    def ok_running_s(self) -> float:
        """ok_s less the machine's stalls: what the cluster itself took."""
        return self.ok_s - self.stalled_s

    def describe(self) -> str:
        stalled = f" ({self.stalled_s:.2f}s of it stalled)" if self.stalled_s else ""
        return (
            f"killed {self.killed.address}: replica {self.promoted.address} promoted after "
            f"{self.promoted_s:.2f}s, cluster ok after {self.ok_s:.2f}s{stalled}"
        )


def kill_primary(
    ports: Sequence[int], primary_port: int, *, how: str = "sigkill", timeout_s: float = 30
) -> Failover:
    """Kill the primary on `primary_port` and wait until its replica is
    promoted (owns the slots) and every surviving node is ok again. The
    deadline is extended by any stall of this process (stall_watch)."""
    seen = topology(primary_port)
    primary = seen.node(primary_port)
    if not primary.is_primary or not primary.slots:
        raise ValueError(f"{primary.address} is not a primary serving slots")
    candidates = seen.replicas_of(primary)
    if not candidates:
        raise ValueError(f"{primary.address} has no replica to take over")
    survivors = [p for p in ports if p != primary_port]
    with StallWatch() as stalls:
        kill_node(primary_port, how)
        start = time.monotonic()
        deadline = start + timeout_s
        promoted = None
        while promoted is None:
            for replica in candidates:
                try:
                    me = topology(replica.port).node(replica.port)
                except (redis.RedisError, OSError):
                    continue
                if me.is_primary and set(primary.slots) <= set(me.slots):
                    promoted = me
                    break
            if promoted is None:
                if time.monotonic() > deadline + stalls.stalled_s:
                    raise TimeoutError(
                        f"no replica of {primary.address} promoted after {timeout_s}s "
                        f"(+{stalls.stalled_s:.2f}s stalled)"
                    )
                time.sleep(0.02)
        promoted_s = time.monotonic() - start
        remaining = max(deadline + stalls.stalled_s - time.monotonic(), 1.0)
        # The dead node stays known (flagged fail) to the survivors.
        wait_ok(survivors, remaining, expect_nodes=len(ports), interval_s=0.02)
        ok_s = time.monotonic() - start
        return Failover(primary, promoted, promoted_s, ok_s, stalls.stalled_s)


# --- a cluster of subprocesses (the tests) ------------------------------------------


@dataclass
class Cluster:
    """N primaries + N*replicas replicas as subprocesses owned by the caller,
    in `root` (one directory per node)."""

    root: Path
    ports: tuple[int, ...]
    replicas: int = 1
    node_timeout_ms: int = NODE_TIMEOUT_MS
    bus_ports: Mapping[int, int] | None = None
    processes: dict[int, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.ports) % (1 + self.replicas):
            raise ValueError(f"{len(self.ports)} nodes do not split into primaries + replicas")
        if len(self.ports) // (1 + self.replicas) < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")

    @property
    def seed_port(self) -> int:
        return self.ports[0]

    def seed_url(self) -> str:
        return seed_url(self.seed_port)

    def node_dir(self, port: int) -> Path:
        return self.root / str(port)

    def log(self, port: int) -> Path:
        return self.node_dir(port) / "redis.log"

    def spawn(self, port: int) -> None:
        directory = self.node_dir(port)
        directory.mkdir(parents=True, exist_ok=True)
        bus = (self.bus_ports or {}).get(port)
        command = node_command(port, directory, node_timeout_ms=self.node_timeout_ms, bus_port=bus)
        with self.log(port).open("ab") as log:
            self.processes[port] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def start(self, timeout_s: float = 30) -> float:
        """Start every node, create the cluster, wait until it is ok; the
        seconds from the first spawn to ok."""
        begin = time.monotonic()
        try:
            for port in self.ports:
                self.spawn(port)
            wait_answering(self.ports, timeout_s)
            create(self.ports, self.replicas)
            wait_ok(self.ports, timeout_s, expect_nodes=len(self.ports), whole=True)
        except BaseException:
            tails = self.log_tails()
            self.stop()
            raise RuntimeError(f"redis cluster did not start\n{tails}") from None
        return time.monotonic() - begin

    def log_tails(self, chars: int = 1000) -> str:
        """The end of every node's log: what a failed assertion should show."""
        logs = [(port, self.log(port)) for port in self.ports]
        tails = (f"--- {port}\n{log.read_text()[-chars:]}" for port, log in logs if log.exists())
        return "\n".join(tails)

    def running(self, port: int) -> bool:
        process = self.processes.get(port)
        return process is not None and process.poll() is None

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if self.running(p)]

    def topology(self) -> Topology:
        return topology(self.live_ports()[0])

    def primaries(self) -> list[Node]:
        return self.topology().primaries

    def wait_ok(self, timeout_s: float = 30) -> float:
        """Every node running answers ok; with all of them running, whole()."""
        live = self.live_ports()
        whole = len(live) == len(self.ports)
        return wait_ok(live, timeout_s, expect_nodes=len(self.ports), whole=whole)

    def kill(self, port: int) -> None:
        """SIGKILL one node (the test's own process: no INFO round trip)."""
        process = self.processes[port]
        process.kill()
        process.wait()

    def kill_primary(self, port: int | None = None, timeout_s: float = 30) -> Failover:
        """Kill a primary (the one on `port`, else the first) by SIGKILL and
        wait for its replica's promotion and the cluster ok again."""
        port = port if port is not None else self.primaries()[0].port
        failover = kill_primary(self.live_ports(), port, timeout_s=timeout_s)
        self.processes[port].wait()
        return failover

    def heal(self, timeout_s: float = 30) -> float:
        """Restart every dead node (from its nodes-<port>.conf: it rejoins as
        a replica of whoever took its slots) and wait until all are ok."""
        for port in self.ports:
            if not self.running(port):
                self.spawn(port)
        wait_answering(self.ports, timeout_s)
        return self.wait_ok(timeout_s)

    def flushall(self) -> None:
        for node in self.primaries():
            client(node.port).flushall()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait()
        self.processes.clear()


# --- the local stack ------------------------------------------------------------------

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
