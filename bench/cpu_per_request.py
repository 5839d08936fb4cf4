"""CPU per request by process group, from runs `bench.run` wrote.

    python -m bench.cpu_per_request bench/results/<run>.json [...] [--only ceiling-query,W2] [--mix]

For each workload of each run: its requests and each group's CPU seconds
(`cpu_s`) divided into µs per request. "app" is what answered behind the
gateway: the three services, or the ceiling's aiohttp processes. When a run
is bound by CPU, the ratio of two workloads' throughputs is the inverse
ratio of their totals, so this says where one spends what the other does
not (docs/decisions/0043). `--mix` adds, under each mix of several routes,
what it would cost if each route cost what it did alone in the same run (its
`cold-*` workloads): the difference is what mixing the routes costs
(docs/decisions/0061).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SERVICES = ("overview", "reviews", "qa")


def per_request(workload: dict) -> dict[str, float]:
    """µs of CPU per request for app, nginx, postgres, redis and wrk."""
    cpu, n = workload["cpu_s"], workload["requests"]
    ceiling = workload["name"].startswith("ceiling")
    groups = {
        "app": cpu.get("ceiling-aiohttp", 0.0) if ceiling else sum(cpu[s] for s in SERVICES),
        "nginx": cpu.get("ceiling-nginx", 0.0) if ceiling else cpu["nginx"],
        "postgres": cpu["postgres"],
        "redis": cpu["redis"],
        "wrk": cpu["wrk"],
    }
    return {group: seconds / n * 1e6 for group, seconds in groups.items()}


def routes_alone(run: dict, mix: dict, prefix: str = "cold-") -> dict[str, float] | None:
    """µs per request per group of `mix` had each of its operations cost what
    the run's single-route workload (`prefix`*) holding it did; None when one
    has no such workload. Requests are drawn in proportion to the weights,
    so the cost is the weighted mean of the routes' costs."""
    alone = {
        op: per_request(w)
        for w in run["workloads"]
        if w["name"].startswith(prefix) and w["requests"]
        for op in w["ops"]
    }
    ops = mix["ops"]
    if len(ops) < 2 or not set(ops) <= set(alone):
        return None
    total = sum(ops.values())
    groups = next(iter(alone.values()))
    return {g: sum(w * alone[op][g] for op, w in ops.items()) / total for g in groups}


def _row(label: str, rps: str, us: dict[str, float]) -> str:
    cells = " | ".join(f"{v:.1f}" for v in us.values())
    return f"| {label} | {rps} | {cells} | {sum(us.values()):.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--mix", action="store_true", help="each mix against its routes alone")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    print("| run | workload | rps | app | nginx | postgres | redis | wrk | total |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for path in args.runs:
        run = json.loads(path.read_text())
        for workload in run["workloads"]:
            if (only and workload["name"] not in only) or not workload["requests"]:
                continue
            label = f"{run['run_id']} (SCALE {run['scale']}) | {workload['name']}"
            print(_row(label, f"{workload['rps']:,.0f}", per_request(workload)))
            expected = routes_alone(run, workload) if args.mix else None
            if expected is not None:
                print(_row(f"{label}, its routes alone", "", expected))


if __name__ == "__main__":
    main()
