"""The benchmark report's ratios (pure functions of a run's JSON)."""

from __future__ import annotations

from typing import Any

from bench import report


def workload(name: str, rps: float, ceiling: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "rps": rps,
        "ceiling": ceiling,
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
        "errors": {"ratio": 0, "bad_responses": 0},
        "cache": {},
        "cpu_pct": {},
        "peak_rss_mb": {},
        **extra,
    }


def test_a_ratio_is_against_the_ceiling_row_without_pairs() -> None:
    runs = [workload("ceiling-bare", 10_000), workload("W1", 5_500, "ceiling-bare")]
    report.add_ratios(runs)
    assert runs[1]["ceiling_ratio"] == 0.55
    assert "ceiling_ratio_apart" not in runs[1]
    assert "ratio<0.6" in report.target_status(runs[1])


def test_paired_rounds_give_the_ratio_and_the_row_ratio_stays_beside_it() -> None:
    paired = {
        "ceiling": "ceiling-bare",
        "rounds": [
            {"ceiling_rps": 9_000, "rps": 5_600, "ratio": 0.622},
            {"ceiling_rps": 12_000, "rps": 6_000, "ratio": 0.5},
            {"ceiling_rps": 10_000, "rps": 6_500, "ratio": 0.65},
        ],
        "median_ratio": 0.622,
    }
    runs = [
        workload("ceiling-bare", 15_000),
        workload("W1", 8_100, "ceiling-bare", paired=paired),
    ]
    report.add_ratios(runs)
    w1 = runs[1]
    assert w1["ceiling_ratio"] == 0.622
    assert w1["ceiling_ratio_apart"] == round(8_100 / 15_000, 3)
    assert report.target_status(w1) == "met"
    run = {
        "run_id": "t",
        "scale": "1.0",
        "quick": False,
        "gateway_url": "http://x",
        "services": ["reviews"],
        "threads": 2,
        "connections": 64,
        "cpus": 2,
        "workloads": runs,
        "failures": [],
    }
    text = report.markdown(run)
    assert "0.62 (ceiling-bare, paired)" in text
    assert "6,000 / 12,000 = 0.50" in text and "median 0.62" in text
    assert "minutes apart: 0.54" in text


def test_cold_reads_are_judged_against_ceiling_query_s_rate_and_p99() -> None:
    """Issue 21: W2 and each cold route at >= 0.75 x ceiling-query's rps and
    <= 1.5 x its p99, in the same run."""
    ceiling = workload("ceiling-query", 10_000)
    ceiling["latency_ms"]["p99"] = 20.0
    fast = workload("W2", 8_000, "ceiling-query")
    fast["latency_ms"]["p99"] = 29.0
    slow = workload("cold-answers", 7_000, "ceiling-query")
    slow["latency_ms"]["p99"] = 31.0
    runs = [ceiling, fast, slow]
    report.add_ratios(runs)
    assert fast["ceiling_p99_ratio"] == 1.45
    assert report.target_status(fast) == "met"
    assert report.target_status(slow) == "missed: ratio<0.75, p99>1.5x ceiling's"


def test_the_postgres_line_says_which_pages_the_buffers_were_on() -> None:
    pg = {"shared_buffers_mb": 12052, "prewarmed_mb": {"qa": 5000}, "prewarm_s": 3.3}
    assert "12,052 MB on huge pages," in report._postgres_line({**pg, "huge_pages": True})[0]
    assert "12,052 MB on 4 kB pages," in report._postgres_line({**pg, "huge_pages": False})[0]
    # Runs recorded before the page size was: nothing said either way.
    assert "12,052 MB, prewarmed (qa 5,000 MB)" in report._postgres_line(pg)[0]
