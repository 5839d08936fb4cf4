"""A workload's p99 against its ceiling's, set beside their throughputs, over runs
`bench.run` wrote (docs/decisions/0056).

    python -m bench.tail_vs_throughput bench/results/2026*Z.json [--workload W2]
                                       [--ceiling ceiling-query]

At saturation wrk holds a fixed number of connections open, each with one
request in flight, so a request's time is connections ÷ throughput (Little's
law): when one workload answers at r times its ceiling's rate, its latencies are
about 1/r times the ceiling's, unless its tail has another shape. This prints, per
run, r (rps ÷ the ceiling's), the p99 ratio, and their product: 1 where the
p99 is what the throughput makes it. The summary gives the product's median
and quartiles over all the runs given, and how often the p99 ratio was within
`--p99-bound` with r at or above 1 ÷ that bound, and below it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import NamedTuple


class Pair(NamedTuple):
    run: str
    rps_ratio: float  # the workload's rps ÷ its ceiling's
    p99_ratio: float  # the workload's p99 ÷ its ceiling's

    @property
    def product(self) -> float:
        """1.0 where the p99 is what the throughput alone makes it."""
        return self.rps_ratio * self.p99_ratio


def pair_of(run: dict, workload: str, ceiling: str) -> Pair | None:
    """The workload beside its ceiling in one run; None when either is missing
    or answered nothing."""
    by_name = {w["name"]: w for w in run.get("workloads", [])}
    w, c = by_name.get(workload), by_name.get(ceiling)
    if not w or not c or not w.get("rps") or not c.get("rps"):
        return None
    return Pair(
        run.get("run_id", "?"),
        w["rps"] / c["rps"],
        w["latency_ms"]["p99"] / c["latency_ms"]["p99"],
    )


def summary(pairs: list[Pair], p99_bound: float) -> dict[str, object]:
    """The product's median and quartiles; the p99 bound met, by r's side of 1/bound."""
    products = [p.product for p in pairs]
    fast = [p for p in pairs if p.rps_ratio >= 1 / p99_bound]
    slow = [p for p in pairs if p.rps_ratio < 1 / p99_bound]
    return {
        "runs": len(pairs),
        "product_median": statistics.median(products),
        "product_quartiles": statistics.quantiles(products, n=4) if len(products) > 1 else [],
        "rps_ratio_at_least": 1 / p99_bound,
        "fast_runs": len(fast),
        "fast_p99_met": sum(p.p99_ratio <= p99_bound for p in fast),
        "slow_runs": len(slow),
        "slow_p99_met": sum(p.p99_ratio <= p99_bound for p in slow),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--workload", default="W2")
    parser.add_argument("--ceiling", default="ceiling-query")
    parser.add_argument("--p99-bound", type=float, default=1.5, help="issue 21's: 1.5")
    args = parser.parse_args()
    pairs = []
    for path in args.runs:
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # not a run's results (bench/results also holds cold_ab's)
        pair = pair_of(run, args.workload, args.ceiling) if isinstance(run, dict) else None
        if pair:
            pairs.append(pair)
    print("| run | rps ratio | p99 ratio | product |")
    print("|---|---:|---:|---:|")
    for p in pairs:
        print(f"| {p.run} | {p.rps_ratio:.2f} | {p.p99_ratio:.2f} | {p.product:.2f} |")
    if pairs:
        print(json.dumps(summary(pairs, args.p99_bound), indent=1))


if __name__ == "__main__":
    main()
