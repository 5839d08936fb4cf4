"""bench/write_runs.py: a write run alone (--runs) first gets the rows its
requests name, made by the POSTs that make them, in order."""

from __future__ import annotations

from bench.write_runs import LUA, needed_rows


def test_a_run_alone_first_gets_the_rows_its_requests_name() -> None:
    assert needed_rows("post_question", 10_000) == []
    assert needed_rows("post_answer", 10_000) == [("questions", 10_000, "post_question")]
    # the answer vote names answers 1..spread (its script's SPREAD), whose
    # POST needs questions first
    assert needed_rows("put_answer_helpful", 500) == [
        ("questions", 500, "post_question"),
        ("answers", 500, "post_answer"),
    ]
    assert "math.random(1, SPREAD)" in LUA["put_answer_helpful"]
    assert needed_rows("put_review_helpful", 500) == [("reviews", 1000, "post_review")]
