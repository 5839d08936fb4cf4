"""Cold reads, old code against new, beside ceiling-query: wrk straight at one
service process, every request a cache miss (issue 21's per-route figures).

    python -m bench.cold_ab OLD_DIR NEW_DIR [--scale 0.1] [--rounds 3] [--seconds 8]
                            [--connections 32] [--routes list1000,list30,meta,questions]
                            [--bare] [--ceiling-bodies 400,1400] [--cpu]

Loads the SCALE dataset into the benchmark databases first if it is not
there (bench/data.py, with this checkout's loaders). Each round: ceiling-query
(bench/ceiling.py --query: aiohttp + one indexed asyncpg query per request,
ids walked the same way), then for each route each tree in turn, the first
alternating per round: a private empty Redis, a fresh service process of
that tree on the bench database, `wrk -t1 -c<connections> --latency` with
bench/lua/direct/walk.lua (distinct product ids, a stride over all of them:
no id repeats within a run, so every request misses the cache). Prints one
JSON line per run, then the medians and each route's median ratio to the
same round's ceiling-query; writes bench/results/cold_ab-<time>.json. With
--bare, each round also walks each route on a bare handler running that
route's own statement and shaping (bench/ceiling.py --route): `of_bare` is
then what the service around the statement leaves of it (docs/decisions/0047).
With --ceiling-bodies, each round also runs ceiling-query answering bodies of
each size given (bytes; `ceiling-query-<N>B`): what a route's larger body
alone costs the ceiling (docs/decisions/0052).
With --cpu, each run also reports `cpu_us`: CPU microseconds per request of
the process under test (`app`), of all Postgres processes and of wrk
(docs/decisions/0059). Straight at one process, the app's single core is
what saturates first.
The services' tables and indexes are read into Postgres's buffers first
(bench/pgtune.py, as bench.run does).
Docs: docs/decisions/0035-reviews-read-model.md, 0036-qa-read-model.md."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bench import data, pgtune
from bench.env import wait_for as wait_http
from bench.procs import Sampler, by_comm
from bench.run import parse_args as bench_args
from bench.write_ab import free_port, per_request

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv/bin/python")
WALK = str(ROOT / "bench/lua/direct/walk.lua")

# name: (service, path before the id, after it); the id is a product's, or a
# question's for `answers` (ID_SQL gives each walk's largest id).
ROUTES = {
    "list1000": ("reviews", "/reviews/?product_id=", "&page=1&count=1000&sort=relevant"),
    "list30": ("reviews", "/reviews/?product_id=", "&page=1&count=30&sort=newest"),
    "list5": ("reviews", "/reviews/?product_id=", "&page=1&count=5&sort=helpful"),
    "meta": ("reviews", "/reviews/meta?product_id=", ""),
    "questions": ("qa", "/qa/questions?product_id=", ""),
    "answers": ("qa", "/qa/questions/", "/answers?page=1&count=5"),
    "product": ("overview", "/products/", ""),
    "styles": ("overview", "/products/", "/styles"),
    "related": ("overview", "/products/", "/related"),
}
DEFAULT_ROUTES = "list1000,list30,list5,meta,questions"
ID_SQL = {
    "reviews": "SELECT max(product_id) FROM reviews",
    "qa": "SELECT max(product_id) FROM questions",
    "overview": "SELECT max(id) FROM products",
    "answers": "SELECT max(id) FROM questions",
}


def wrk(
    url: str, seconds: int, connections: int, args: list[str], cpu_of: int | None = None
) -> dict:
    """One wrk run's rate and latency; with `cpu_of` (the pid under test), its
    `cpu_us` too. A Postgres backend born during the run is charged whole."""
    if cpu_of is not None:
        sampler = Sampler(lambda: {"app": {"app": cpu_of}, "postgres": by_comm("postgres")})
        sampler.start()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            WALK,
            url,
            "--",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        assert m, out
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "non_2xx": int(errors[1]) if errors else 0,
    }
    if cpu_of is not None:
        requests = float(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
        result["cpu_us"] = per_request(sampler, before, requests)
    return result


class Proc:
    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.p = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


def run_service(
    tree: Path, service: str, dsn: str, route: tuple, max_id: int, a, extra_env: dict[str, str]
) -> dict:
    redis_port, port = free_port(), free_port()
    redis = Proc(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], ROOT, {}
    )
    env = {
        f"{service.upper()}_DATABASE_URL": dsn,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "PORT": str(port),
        "PYTHONPATH": str(tree),
        **extra_env,
    }
    svc = Proc([PYTHON, "-m", f"services.{service}.app"], tree, env)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        start = str(random.randrange(max_id))
        return wrk(
            f"http://127.0.0.1:{port}",
            a.seconds,
            a.connections,
            [route[1], route[2], str(max_id), start],
            svc.p.pid if a.cpu else None,
        )
    finally:
        svc.stop()
        redis.stop()


def run_ceiling(
    dsn: str,
    max_id: int,
    a,
    unfair: bool = False,
    route: str | None = None,
    body_bytes: int | None = None,
) -> dict:
    """ceiling-query; with `route`, that route's statement on a bare handler,
    walked as the service is; with `body_bytes`, answering bodies that size."""
    port = free_port()
    argv = [PYTHON, "-m", "bench.ceiling", "--port", str(port), "--query", dsn]
    argv += ["--unfair-pool"] if unfair else []
    argv += ["--route", route] if route else []
    argv += ["--body-bytes", str(body_bytes)] if body_bytes else []
    proc = Proc(argv, ROOT, {})
    path = ["/x?id=", ""] if route is None else [ROUTES[route][1], ROUTES[route][2]]
    try:
        wait_http(f"http://127.0.0.1:{port}{path[0]}1{path[1]}")
        start = str(random.randrange(max_id))
        return wrk(
            f"http://127.0.0.1:{port}",
            a.seconds,
            a.connections,
            [*path, str(max_id), start],
            proc.p.pid if a.cpu else None,
        )
    finally:
        proc.stop()


def sized_ceiling(size: int) -> str:
    """The row name of ceiling-query answering `size`-byte bodies."""
    return f"ceiling-query-{size}B"


def max_id_of(dsn: str, walk: str) -> int:
    """The largest id a walk draws from: `walk` is a service, or `answers`."""
    import asyncio

    import asyncpg

    async def query() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(ID_SQL[walk])
        finally:
            await conn.close()

    return asyncio.run(query())


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--scale", default="0.1")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--routes", default=DEFAULT_ROUTES, help=f"of {','.join(ROUTES)}")
    p.add_argument("--tag", default="wrk", help="only shows in the command line")
    p.add_argument("--old-env", default="", help="KEY=VALUE,... for the old tree's service")
    p.add_argument("--new-env", default="", help="KEY=VALUE,... for the new tree's service")
    p.add_argument(
        "--unfair-ceiling",
        action="store_true",
        help="also ceiling-query on asyncpg's own (unfair) pool acquire, each round",
    )
    p.add_argument(
        "--ceiling-bodies",
        default="",
        help="also ceiling-query answering bodies of these sizes (bytes, comma-separated)",
    )
    p.add_argument(
        "--bare",
        action="store_true",
        help="also each route's statement on a bare handler, each round (of_bare)",
    )
    p.add_argument(
        "--cpu",
        action="store_true",
        help="also CPU us per request of the process, Postgres and wrk, each run",
    )
    a = p.parse_args()
    cfg, _ = bench_args(["--scale", a.scale])
    routes = a.routes.split(",")
    services = sorted({ROUTES[r][0] for r in routes})
    env = {**os.environ}
    # ceiling-query reads reviews whichever routes are walked.
    for service in sorted({*services, "reviews"}):
        data.ensure_loaded(cfg, service, env, False)
    # As bench.run does: the read path into Postgres's buffers first, so that
    # the first route walked does not pay for reading the tables in.
    pgtune.prewarm(replace(cfg, services=tuple(services)), pgtune.ensure_buffers(cfg))
    # ceiling-query probes reviews' primary key whichever routes are walked;
    # a run of qa or overview routes alone would not have read it in.
    pgtune.prewarm_one(cfg.database_url("reviews"), "reviews_pkey")
    dsn = {s: cfg.database_url(s) for s in services}
    walk_of = {r: "answers" if r == "answers" else ROUTES[r][0] for r in routes}
    max_id = {w: max_id_of(dsn[ROUTES[r][0]], w) for r, w in walk_of.items()}
    trees = {"old": a.old.resolve(), "new": a.new.resolve()}
    tree_env = {
        "old": dict(kv.split("=", 1) for kv in a.old_env.split(",") if kv),
        "new": dict(kv.split("=", 1) for kv in a.new_env.split(",") if kv),
    }
    bodies = [int(n) for n in a.ceiling_bodies.split(",") if n]
    runs: list[dict] = []
    reviews_dsn = cfg.database_url("reviews")
    reviews_max = max_id.get("reviews") or max_id_of(reviews_dsn, "reviews")
    for rnd in range(a.rounds):
        ceiling = run_ceiling(reviews_dsn, reviews_max, a)
        runs.append({"round": rnd, "route": "ceiling-query", "tree": "-", **ceiling})
        print(json.dumps(runs[-1]), flush=True)
        for size in bodies if rnd % 2 == 0 else bodies[::-1]:  # alternated, as the trees
            sized = run_ceiling(reviews_dsn, reviews_max, a, body_bytes=size)
            runs.append(
                {
                    "round": rnd,
                    "route": sized_ceiling(size),
                    "tree": "-",
                    **sized,
                    "of_ceiling": round(sized["rps"] / ceiling["rps"], 3),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
        if a.unfair_ceiling:
            unfair = run_ceiling(reviews_dsn, reviews_max, a, unfair=True)
            runs.append({"round": rnd, "route": "ceiling-query-unfair", "tree": "-", **unfair})
            print(json.dumps(runs[-1]), flush=True)
        order = ["old", "new"] if rnd % 2 == 0 else ["new", "old"]
        for name in routes:
            route = ROUTES[name]
            service, db = route[0], dsn[route[0]]
            bare = None
            if a.bare:
                bare = run_ceiling(db, max_id[walk_of[name]], a, route=name)
                runs.append({"round": rnd, "route": name, "tree": "bare", **bare})
                print(json.dumps(runs[-1]), flush=True)
            for label in order:
                result = run_service(
                    trees[label], service, db, route, max_id[walk_of[name]], a, tree_env[label]
                )
                runs.append(
                    {
                        "round": rnd,
                        "route": name,
                        "tree": label,
                        **result,
                        "of_ceiling": round(result["rps"] / ceiling["rps"], 3),
                        **({"of_bare": round(result["rps"] / bare["rps"], 3)} if bare else {}),
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
    summary = {}
    ceilings = [
        "ceiling-query",
        *(["ceiling-query-unfair"] if a.unfair_ceiling else []),
        *(sized_ceiling(size) for size in bodies),
    ]
    for name in [*ceilings, *routes]:
        labels = ["-"] if name in ceilings else ["bare", "old", "new"] if a.bare else ["old", "new"]
        for label in labels:
            mine = [r for r in runs if r["route"] == name and r["tree"] == label]
            served = label in ("old", "new")
            summary[f"{name} {label}"] = {
                k: statistics.median(r[k] for r in mine)
                for k in (
                    "rps",
                    "p50_ms",
                    "p99_ms",
                    "non_2xx",
                    *(["of_ceiling"] if all("of_ceiling" in r for r in mine) else []),
                    *(["of_bare"] if served and a.bare else []),
                )
            }
            if a.cpu:
                summary[f"{name} {label}"]["cpu_us"] = {
                    group: statistics.median(r["cpu_us"][group] for r in mine)
                    for group in mine[0]["cpu_us"]
                }
        if name not in ceilings:
            pairs = [
                next(
                    r["rps"]
                    for r in runs
                    if r["route"] == name and r["tree"] == "new" and r["round"] == i
                )
                / next(
                    r["rps"]
                    for r in runs
                    if r["route"] == name and r["tree"] == "old" and r["round"] == i
                )
                for i in range(a.rounds)
            ]
            summary[f"{name} new/old"] = {
                "pair_ratios": [round(x, 3) for x in pairs],
                "median": round(statistics.median(pairs), 3),
            }
    for k, v in summary.items():
        print(k, json.dumps(v))
    out = ROOT / "bench/results" / f"cold_ab-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(a) | {"old": str(a.old), "new": str(a.new)},
                "runs": runs,
                "summary": summary,
            },
            indent=1,
        )
    )
    print("wrote", out)


if __name__ == "__main__":
    sys.exit(main())
