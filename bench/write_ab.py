"""Write throughput, old code against new: wrk straight at one service process.

    python -m bench.write_ab OLD_DIR NEW_DIR [--rounds 3] [--seconds 10] [--peers 1]
                             [--old-env K=V,...] [--new-env K=V,...] [--runs A,B]
                             [--spread 1000] [--fresh]

For each round, each tree in turn (old, new: alternated): a private Redis
(its own port, empty), the tree's service process under test plus `--peers`
idle processes of the same service and tree subscribed to the same namespace
(as in the stack, where a write's invalidation reaches the other instances),
then `wrk -t1 -c16 --latency` with a Lua POST/PUT script for each write:
POST /qa/questions, POST /reviews (without photos, then with two), PUT
/qa/questions/:id/helpful, POST /qa/questions/:id/answers, PUT
/reviews/:id/helpful, PUT /qa/answers/:id/helpful
(each after the POST that made its ids; a run alone makes them first,
unmeasured), then the three reports, PUT /reviews/:id/report,
/qa/questions/:id/report and /qa/answers/:id/report
(each walking unreported ids upward; before a run the tree's own POSTs top its
table up to `--report-ids` unreported rows, unmeasured). Each tree
writes into a database of its own (runway_wab_<service>_<old|new>, created
and migrated by that tree; kept between invocations unless `--fresh` drops
them first): both grow alike. The answers' question ids and the answer PUTs'
ids come from 1..`--spread` (1000): with 1000, every question soon holds
dozens of answers, which the qa read model's rebuild reads on each answer
write (a real question has about two; decision 0038). Prints
requests/s, p50 and p99 per run and the medians; with `--cpu`, also each
group's CPU per request in the measured window (the service processes,
Postgres, the private Redis, wrk), to say where a difference goes. Docs:
docs/decisions/0032-cache-without-acks.md."""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.procs import Sampler, by_comm
from bench.write_runs import LUA, REPORTED, RUNS, needed_rows

PYTHON = str(Path(__file__).resolve().parent.parent / ".venv/bin/python")
PG = "postgresql://postgres@127.0.0.1:5432"


def others() -> list[str]:
    """Other benchmarks running now (bench.run, wrk, irbench), not this one."""
    found = subprocess.run(
        ["pgrep", "-f", "bench.run|wrk|irbench"], capture_output=True, text=True
    ).stdout.split()
    return [pid for pid in found if int(pid) != os.getpid()]


def wait_quiet() -> None:
    """Another benchmark on this machine would skew both: wait until none
    runs. This process's own command line names wrk (`--tag`), so others'
    checks see it too."""
    while others():
        time.sleep(2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready")


def database(service: str, label: str) -> str:
    return f"{PG}/runway_wab_{service}_{label}"


def drop(service: str, label: str) -> None:
    name = database(service, label).rsplit("/", 1)[1]
    subprocess.run(
        ["psql", f"{PG}/postgres", "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def prepare(tree: Path, service: str, label: str) -> None:
    env = {**os.environ, f"{service.upper()}_DATABASE_URL": database(service, label)}
    subprocess.run(
        [PYTHON, "-m", "services.common.migrate", service],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def start(
    tree: Path, service: str, label: str, port: int, redis_url: str, log, extra: dict[str, str]
) -> subprocess.Popen:
    env = {
        **os.environ,
        f"{service.upper()}_DATABASE_URL": database(service, label),
        "PORT": str(port),
        "REDIS_URL": redis_url,
        "DB_POOL_MAX": "10",
        **extra,
    }
    return subprocess.Popen(
        [PYTHON, "-m", f"services.{service}.app"], cwd=tree, env=env, stdout=log, stderr=log
    )


def psql_row(service: str, label: str, sql: str) -> list[str]:
    """One row of `sql` on the tree's database, its columns as text."""
    out = subprocess.run(
        ["psql", database(service, label), "-Atc", sql],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().split("|")


def unreported(service: str, label: str, table: str) -> tuple[int, int]:
    """The first unreported id of `table` and how many ids from it on are
    unreported (reports walk upward from the first: those above it are all
    unreported)."""
    sql = f"SELECT coalesce(min(id), 0), count(*) FROM {table} WHERE NOT reported"
    first, count = psql_row(service, label, sql)
    return int(first), int(count)


def make_rows(port: int, service: str, label: str, run: str, spread: int, scripts) -> None:
    """The rows `run` needs (needed_rows), made with the tree's own POSTs."""
    for table, rows, post in needed_rows(run, spread):
        while int(psql_row(service, label, f"SELECT count(*) FROM {table}")[0]) < rows:
            wrk(port, scripts[post], 2)


def report_start(
    port: int, service: str, label: str, run: str, need: int, spread: int, scripts
) -> int:
    """The first id for a report run, once at least `need` unreported rows
    follow it: topped up with the tree's own POSTs (unmeasured) when short,
    after what those POSTs need (make_rows)."""
    table, post = REPORTED[run]
    make_rows(port, service, label, post, spread, scripts)
    first, count = unreported(service, label, table)
    while count < need:
        wrk(port, scripts[post], max(2, min(30, (need - count) // 800 + 1)))
        first, count = unreported(service, label, table)
    return first


def wrk(
    port: int, script: Path, seconds: int, args: tuple[str, ...] = ()
) -> tuple[float, float, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            "-c16",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
            *(("--", *args) if args else ()),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(pct: str) -> float:
        value, unit = re.search(rf"{pct}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, ms("50"), ms("99")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the cleanups
    parser = argparse.ArgumentParser()
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--peers", type=int, default=1)
    parser.add_argument("--tag", default="wrk", help="only shows in the command line")
    parser.add_argument("--runs", default=",".join(run for _, run in RUNS))
    parser.add_argument(
        "--spread",
        type=int,
        default=1000,
        help="POST answer's question ids and the answer PUTs' ids are drawn from 1..SPREAD",
    )
    parser.add_argument(
        "--report-ids",
        type=int,
        default=0,
        help="unreported rows a report run starts with, topped up by POSTs (default: "
        "6,000 a second of the run; running out is a 404, which stops it)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="drop both trees' databases first (empty at the start)"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="also CPU µs per request by process group"
    )
    parser.add_argument("--old-env", default="", help="KEY=VALUE,... for the old tree's processes")
    parser.add_argument("--new-env", default="", help="KEY=VALUE,... for the new tree's processes")
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    tree_env = {
        "old": dict(kv.split("=", 1) for kv in args.old_env.split(",") if kv),
        "new": dict(kv.split("=", 1) for kv in args.new_env.split(",") if kv),
    }
    work = Path(tempfile.mkdtemp(prefix="write_ab-"))
    scripts = {}
    for name, text in LUA.items():
        scripts[name] = work / f"{name}.lua"
        scripts[name].write_text(text.replace("SPREAD", str(args.spread)))
    for label, tree in trees.items():
        for service in ("qa", "reviews"):
            if args.fresh:
                drop(service, label)
            prepare(tree, service, label)
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    cpu: dict[tuple[str, str], list[dict[str, float]]] = {}
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    time.sleep(0.3)
    runs = [(svc, run) for svc, run in RUNS if run in args.runs.split(",")]
    need = args.report_ids or 6_000 * args.seconds

    def start_id(port: int, service: str, label: str, run: str) -> str:
        return str(report_start(port, service, label, run, need, args.spread, scripts))

    try:
        # Per write: its rounds, each an old/new pair started once nothing
        # else runs (another benchmark may start meanwhile: `others` says so).
        for service, run in runs:
            for round_ in range(args.rounds):
                wait_quiet()
                for label, tree in trees.items():
                    subprocess.run(
                        ["redis-cli", "-p", str(redis_port), "FLUSHALL"],
                        check=True,
                        stdout=subprocess.DEVNULL,
                    )
                    log = (work / f"{label}-{service}.log").open("a")
                    port = free_port()
                    extra = tree_env[label]
                    procs = [start(tree, service, label, port, redis_url, log, extra)]
                    for _ in range(args.peers):
                        procs.append(
                            start(tree, service, label, free_port(), redis_url, log, extra)
                        )
                    try:
                        wait_http(f"http://127.0.0.1:{port}/readyz")
                        time.sleep(1.0)  # the peers subscribe; leases granted
                        make_rows(port, service, label, run, args.spread, scripts)
                        ids: tuple[str, ...] = ()
                        if run in REPORTED:
                            ids = (start_id(port, service, label, run),)
                        wrk(port, scripts[run], 2, ids)  # warm-up
                        if run in REPORTED:
                            ids = (start_id(port, service, label, run),)
                        sampler = Sampler(watched(procs, redis)).start() if args.cpu else None
                        before = resource.getrusage(resource.RUSAGE_CHILDREN)
                        figures = wrk(port, scripts[run], args.seconds, ids)
                        if sampler is not None:
                            cpu.setdefault((run, label), []).append(
                                per_request(sampler, before, figures[0] * args.seconds)
                            )
                    finally:
                        for p in procs:
                            p.terminate()
                        for p in procs:
                            p.wait(10)
                    results.setdefault((run, label), []).append(figures)
                    print(
                        f"round {round_ + 1} {label} {run}: {figures[0]:.0f} rps, "
                        f"p50 {figures[1]:.2f} ms, p99 {figures[2]:.2f} ms; "
                        f"others: {others() or 'none'}",
                        flush=True,
                    )
                    if args.cpu:
                        print(f"  cpu µs/request: {cpu[(run, label)][-1]}", flush=True)
    finally:
        redis.terminate()
        redis.wait(5)
    print("\nmedians (rps, p50 ms, p99 ms); ratio new/old")
    for _, run in runs:
        old = [statistics.median(x) for x in zip(*results[(run, "old")], strict=True)]
        new = [statistics.median(x) for x in zip(*results[(run, "new")], strict=True)]
        print(
            f"{run}: old {old[0]:.0f} / {old[1]:.2f} / {old[2]:.2f}; "
            f"new {new[0]:.0f} / {new[1]:.2f} / {new[2]:.2f}; x{new[0] / old[0]:.2f}"
        )
        for label in ("old", "new") if args.cpu else ():
            rounds = cpu[(run, label)]
            medians = {g: statistics.median(r[g] for r in rounds) for g in rounds[0]}
            print(f"  {label} cpu µs/request (medians): {medians}")


def watched(procs: list[subprocess.Popen], redis: subprocess.Popen):
    """The process groups a write's CPU goes to, for bench.procs.Sampler."""
    service = {str(p.pid): p.pid for p in procs}
    return lambda: {
        "service": service,
        "postgres": by_comm("postgres"),
        "redis": {"redis": redis.pid},
    }


def per_request(sampler: Sampler, before: resource.struct_rusage, requests: float) -> dict:
    """CPU µs per request by group over the window `sampler` watched; wrk's
    (a reaped child) from the rusage of children since `before`."""
    usage = sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    groups = {**usage.cpu_s, "wrk": wrk_s}
    return {g: round(s * 1e6 / max(requests, 1)) for g, s in groups.items()}


if __name__ == "__main__":
    sys.exit(main())
