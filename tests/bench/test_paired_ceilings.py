"""bench/run.py PAIRED_CEILING: each paired workload is measured back to back
with the very ceiling its ratio is reported against, and W2's rounds are as
cold as W2 (else the paired median would judge a different ratio)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench.run import PAIRED_CEILING, ceilings, main_workloads
from bench.run import parse_args as bench_args


def plans() -> tuple[dict, dict]:
    cfg, _ = bench_args(["--scale", "0.1"])
    pools: dict[str, Path] = defaultdict(lambda: Path("/dev/null"))
    return (
        {w.name: w for w in main_workloads(cfg, pools)},
        {c.name: c for c in ceilings(cfg, pools)},
    )


def test_each_paired_workload_is_paired_with_its_own_ceiling() -> None:
    workloads, ceiling_rows = plans()
    assert set(PAIRED_CEILING) == {"W1", "W2"}
    for name, ceiling in PAIRED_CEILING.items():
        assert workloads[name].ceiling == ceiling
        assert ceiling in ceiling_rows


def test_the_cold_workload_flushes_first_and_its_rounds_keep_that() -> None:
    workloads, _ = plans()
    assert workloads["W2"].flush_first
    assert not workloads["W1"].flush_first  # hot reads stay warm between rounds
