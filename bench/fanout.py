"""What an invalidation costs as the fleet grows: N cache processes on one
Redis, old code against new.

    python -m bench.fanout OLD_DIR|- NEW_DIR [--n 2,8,32,64] [--writes 200] [--rate 20]
                           [--layout shared|isolate|apart]

For each N and each tree (alternated): a private Redis (its own port), N
lightweight processes (each a ResponseCache of that tree in an asyncio loop
under uvloop, no HTTP) on one namespace, all started and leased. Then:

* idle, 10 s: Redis's CPU (INFO cpu, user+sys) per second, and the pub/sub
  messages every process received (deliveries) per second;
* writes: one process invalidates a scope `--writes` times at `--rate` per
  second; its invalidate() latency p50/p99, and per write the messages Redis
  took in (publishes: INFO commandstats publish/spublish calls, scripts'
  included) and delivered (the processes' received messages), each minus
  the idle rate over the window.

`--layout` places the processes on the two cores:
* `shared`: no pinning;
* `isolate` (`--isolate`): the writer and Redis on CPU 0, the N-1 other
  processes on CPU 1 at nice 19. In a fleet the others run on other hosts;
  on two cores, without this, the writer's tail is its wait for a core behind
  63 Python processes (docs/decisions/0032), not anything the protocol makes
  it wait for. But Redis's own work per write, which grows with N (one
  delivery per subscriber, written to its socket after the writer's reply),
  then runs on the writer's core;
* `apart`: the writer alone on CPU 0; Redis on CPU 1, with the N-1 others
  there under SCHED_IDLE (they run only when Redis does not). As in a fleet,
  where Redis is a host of its own and the writer's host does none of its
  deliveries (docs/decisions/0041).
Redis delivers every message to every process in each layout.

Docs: docs/decisions/0032-cache-without-acks.md."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = str(Path(__file__).resolve().parent.parent / ".venv/bin/python")

CHILD = r"""
import asyncio, json, sys, time
import uvloop
from redis.asyncio import Redis
from services.common.cache import ResponseCache
from services.common.metrics import Metrics

async def main(url, writer):
    cache = ResponseCache(Redis.from_url(url, socket_timeout=None), "fan", Metrics("fan"),
                          timeout_s=0.05,
                          pubsub_factory=lambda: Redis.from_url(url, socket_timeout=None))
    co = cache._coherence
    seen = [0]
    handle = co.handle_message
    async def counting(message):
        seen[0] += 1
        await handle(message)
    co.handle_message = counting
    await cache.start()
    ok = await cache.wait_ready(30)
    print(json.dumps({"ready": ok}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
        cmd = json.loads(line)
        if cmd["do"] == "count":
            print(json.dumps({"seen": seen[0], "live": cache.local_live()}), flush=True)
        elif cmd["do"] == "write":
            lat = []
            interval = 1 / cmd["rate"]
            start = time.perf_counter()
            for i in range(cmd["writes"]):
                due = start + i * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                t = time.perf_counter()
                await cache.invalidate(f"p:{i % 1000}")
                lat.append(time.perf_counter() - t)
            print(json.dumps({"lat": lat}), flush=True)
    await cache.stop()

uvloop.run(main(sys.argv[1], sys.argv[2] == "1"))
"""


def wait_quiet() -> None:
    """Another benchmark on this machine (bench.run, wrk, irbench) would skew
    both: wait until none runs. This process's own command line carries
    `--tag wrk`, so others' checks see it too."""
    while True:
        found = subprocess.run(
            ["pgrep", "-f", "bench.run|wrk|irbench"], capture_output=True, text=True
        ).stdout.split()
        if not [pid for pid in found if int(pid) != os.getpid()]:
            return
        time.sleep(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_info(port: int, section: str) -> dict[str, str]:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", section], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def redis_cpu(port: int) -> float:
    info = redis_info(port, "cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def publishes(port: int) -> int:
    info = redis_info(port, "commandstats")
    total = 0
    for name in ("cmdstat_publish", "cmdstat_spublish"):
        if name in info:
            total += int(info[name].split("calls=")[1].split(",")[0])
    return total


# Each layout's command prefixes (see the docstring): Redis, the writer, the others.
LAYOUTS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "shared": ([], [], []),
    "isolate": (
        ["taskset", "-c", "0"],
        ["taskset", "-c", "0"],
        ["taskset", "-c", "1", "nice", "-n", "19"],
    ),
    "apart": (
        ["taskset", "-c", "1"],
        ["taskset", "-c", "0"],
        ["taskset", "-c", "1", "chrt", "--idle", "0"],
    ),
}


class Child:
    def __init__(self, tree: Path, url: str, writer: bool, layout: str) -> None:
        _, writer_pin, other_pin = LAYOUTS[layout]
        pin = writer_pin if writer else other_pin
        self.proc = subprocess.Popen(
            [*pin, PYTHON, "-c", CHILD, url, "1" if writer else "0"],
            cwd=tree,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(tree)},
        )

    def ask(self, cmd: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def ready(self) -> bool:
        assert self.proc.stdout
        return json.loads(self.proc.stdout.readline())["ready"]

    def quit(self) -> None:
        try:
            assert self.proc.stdin
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)
        except Exception:
            self.proc.kill()


def seen(children: list[Child]) -> int:
    return sum(c.ask({"do": "count"})["seen"] for c in children)


def measure(
    tree: Path, n: int, writes: int, rate: float, idle_s: float, layout: str = "shared"
) -> dict:
    wait_quiet()
    port = free_port()
    redis = subprocess.Popen(
        [
            *LAYOUTS[layout][0],
            "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    url = f"redis://127.0.0.1:{port}/0"
    children = [Child(tree, url, i == 0, layout) for i in range(n)]
    try:
        ready = sum(c.ready() for c in children)
        time.sleep(2.0)  # settle
        cpu0, seen0, pub0, t0 = redis_cpu(port), seen(children), publishes(port), time.monotonic()
        time.sleep(idle_s)
        cpu1, seen1, pub1, t1 = redis_cpu(port), seen(children), publishes(port), time.monotonic()
        idle_cpu = (cpu1 - cpu0) / (t1 - t0)
        idle_deliveries = (seen1 - seen0) / (t1 - t0)
        idle_publishes = (pub1 - pub0) / (t1 - t0)
        w0 = time.monotonic()
        lat = children[0].ask({"do": "write", "writes": writes, "rate": rate})["lat"]
        w1 = time.monotonic()
        seen2, pub2 = seen(children), publishes(port)
        window = w1 - w0
        lat_ms = sorted(x * 1000 for x in lat)
        return {
            "n": n,
            "ready": ready,
            "writer_p50_ms": round(statistics.median(lat_ms), 2),
            "writer_p99_ms": round(lat_ms[int(len(lat_ms) * 0.99) - 1], 2),
            "publishes_per_write": round((pub2 - pub1 - idle_publishes * window) / writes, 1),
            "deliveries_per_write": round((seen2 - seen1 - idle_deliveries * window) / writes, 1),
            "idle_redis_cpu_pct": round(idle_cpu * 100, 2),
            "idle_publishes_per_s": round(idle_publishes, 1),
            "idle_deliveries_per_s": round(idle_deliveries, 1),
        }
    finally:
        for c in children:
            c.quit()
        redis.terminate()
        redis.wait(5)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the cleanups
    parser = argparse.ArgumentParser()
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--n", default="2,8,32,64")
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--idle", type=float, default=10)
    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="shared", help="the docstring")
    parser.add_argument("--isolate", action="store_true", help="--layout isolate")
    parser.add_argument("--tag", default="wrk", help="only shows in the command line")
    args = parser.parse_args()
    if args.isolate:
        args.layout = "isolate"
    for n in (int(x) for x in args.n.split(",")):
        trees = [("old", args.old.resolve()), ("new", args.new.resolve())]
        if str(args.old) == "-":  # the new tree alone (the old one's figures known)
            trees = trees[1:]
        for label, tree in trees:
            result = measure(tree, n, args.writes, args.rate, args.idle, args.layout)
            print(json.dumps({"tree": label, "layout": args.layout, **result}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
