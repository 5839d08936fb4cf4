"""A Redis Cluster of subprocesses owned by the caller (the tests, the
benchmarks): N primaries with one replica each on free ports, each node a
`redis-server` of infra/redis_cluster.py's `node_command`; and a primary
killed to watch its replica take over (`kill_primary`, timed less any stall
of this machine: infra/stall_watch.py)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from infra.redis_cluster import (
    NODE_TIMEOUT_MS,
    Node,
    Topology,
    client,
    create,
    kill_node,
    node_command,
    seed_url,
    topology,
    wait_answering,
    wait_ok,
)
from infra.stall_watch import StallWatch


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
    kill_node(primary_port, how)
    with StallWatch() as stalls:  # from the kill on, as ok_s
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
