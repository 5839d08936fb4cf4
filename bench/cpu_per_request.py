"""CPU per request by process group, from runs `bench.run` wrote.

    python -m bench.cpu_per_request bench/results/<run>.json [...] [--only ceiling-query,W2]

For each workload of each run: its requests and each group's CPU seconds
(`cpu_s`) divided into µs per request. "app" is what answered behind the
gateway: the three services, or the ceiling's aiohttp processes. When a run
is bound by CPU, the ratio of two workloads' throughputs is the inverse
ratio of their totals, so this says where one spends what the other does
not (docs/decisions/0043).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--only", default="", help="comma-separated workload names")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    print("| run | workload | rps | app | nginx | postgres | redis | wrk | total |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for path in args.runs:
        run = json.loads(path.read_text())
        for workload in run["workloads"]:
            if (only and workload["name"] not in only) or not workload["requests"]:
                continue
            us = per_request(workload)
            cells = " | ".join(f"{v:.1f}" for v in us.values())
            print(
                f"| {run['run_id']} (SCALE {run['scale']}) | {workload['name']} "
                f"| {workload['rps']:,.0f} | {cells} | {sum(us.values()):.1f} |"
            )


if __name__ == "__main__":
    main()
