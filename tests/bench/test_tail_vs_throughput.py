"""What bench/tail_vs_throughput.py makes of runs' W2 and ceiling-query rows."""

from __future__ import annotations

import pytest

from bench.tail_vs_throughput import Pair, pair_of, summary


def run(w2_rps: float, w2_p99: float, ceiling_rps: float = 8000.0, ceiling_p99: float = 20.0):
    return {
        "run_id": "r",
        "workloads": [
            {"name": "ceiling-query", "rps": ceiling_rps, "latency_ms": {"p99": ceiling_p99}},
            {"name": "W2", "rps": w2_rps, "latency_ms": {"p99": w2_p99}},
        ],
    }


def test_a_pair_divides_the_workload_by_its_ceiling() -> None:
    pair = pair_of(run(4000.0, 50.0), "W2", "ceiling-query")
    assert pair is not None
    assert pair.rps_ratio == pytest.approx(0.5)
    assert pair.p99_ratio == pytest.approx(2.5)
    assert pair.product == pytest.approx(1.25)


def test_a_run_without_the_workload_or_any_answer_gives_no_pair() -> None:
    assert pair_of(run(4000.0, 50.0), "W3", "ceiling-query") is None
    assert pair_of(run(0.0, 50.0), "W2", "ceiling-query") is None
    assert pair_of({"workloads": []}, "W2", "ceiling-query") is None


def test_the_summary_counts_the_bound_met_on_each_side_of_its_rate() -> None:
    pairs = [
        Pair("a", 0.70, 1.40),  # fast, met
        Pair("b", 0.80, 1.60),  # fast, missed
        Pair("c", 0.50, 1.45),  # slow, met
        Pair("d", 0.60, 1.90),  # slow, missed
        Pair("e", 0.55, 1.80),  # slow, missed
    ]
    s = summary(pairs, 1.5)
    assert s["runs"] == 5
    assert s["rps_ratio_at_least"] == pytest.approx(1 / 1.5)
    assert (s["fast_runs"], s["fast_p99_met"]) == (2, 1)
    assert (s["slow_runs"], s["slow_p99_met"]) == (3, 1)
    assert s["product_median"] == pytest.approx(0.99)  # of 0.98, 1.28, 0.725, 1.14, 0.99
