"""Nothing acknowledged is lost: after a write workload, every 201 and 204 the
wrk script counted must be visible in the databases.

* POSTs carry the run's marker as the author name: rows with that name must
  number at least the 201s counted (more is possible: a request that timed
  out on the client may still have committed).
* Helpful PUTs: the sum of the helpfulness counters over the id pools must
  have grown by at least the 204s counted (the pools are only this run's).
* Report PUTs: the wrk script records the id of every acknowledged report;
  each of those rows must be reported.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from .config import BenchConfig

# op -> (service, table, counter column, id pool argument)
HELPFUL = {
    "review_helpful": ("reviews", "reviews", "helpfulness", "wreviews"),
    "question_helpful": ("qa", "questions", "helpful", "wquestions"),
    "answer_helpful": ("qa", "answers", "helpful", "wanswers"),
}
POSTS = {
    "post_review": ("reviews", "reviews", "reviewer_name"),
    "post_question": ("qa", "questions", "asker_name"),
    "post_answer": ("qa", "answers", "answerer_name"),
}
REPORTS = {
    "review_report": ("reviews", "reviews"),
    "question_report": ("qa", "questions"),
    "answer_report": ("qa", "answers"),
}


def _ids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


async def _val(dsn: str, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await conn.fetchval(sql, *args) or 0)
    finally:
        await conn.close()


def helpful_sums(cfg: BenchConfig, pools: dict[str, Path]) -> dict[str, int]:
    """Before the workload: the helpfulness sums the PUTs will add to."""
    sums = {}
    for op, (service, table, column, pool) in HELPFUL.items():
        if service in cfg.services and pool in pools:
            sql = f"SELECT sum({column}) FROM {table} WHERE id = ANY($1::int[])"
            sums[op] = asyncio.run(_val(cfg.database_url(service), sql, _ids(pools[pool])))
    return sums


def verify(
    cfg: BenchConfig,
    pools: dict[str, Path],
    marker: str,
    by_op: dict[str, dict[str, Any]],
    recorded: dict[str, list[int]] | list,
    sums_before: dict[str, int],
) -> tuple[dict[str, Any], list[str]]:
    """Checks per operation, and the failures among them."""
    checks: dict[str, Any] = {}
    recorded = recorded if isinstance(recorded, dict) else {}
    for op, (service, table, column) in POSTS.items():
        if op in by_op:
            sql = f"SELECT count(*) FROM {table} WHERE {column} = $1"
            found = asyncio.run(_val(cfg.database_url(service), sql, marker))
            checks[op] = {"acked": by_op[op].get("ok", 0), "in_db": found}
    for op, (service, table, column, pool) in HELPFUL.items():
        if op in by_op and op in sums_before:
            sql = f"SELECT sum({column}) FROM {table} WHERE id = ANY($1::int[])"
            after = asyncio.run(_val(cfg.database_url(service), sql, _ids(pools[pool])))
            checks[op] = {"acked": by_op[op].get("ok", 0), "in_db": after - sums_before[op]}
    for op, (service, table) in REPORTS.items():
        if op in by_op:
            ids = sorted(set(recorded.get(op) or []))
            sql = f"SELECT count(*) FROM {table} WHERE id = ANY($1::int[]) AND reported"
            found = asyncio.run(_val(cfg.database_url(service), sql, ids))
            # Counted per distinct id: reporting twice is one reported row.
            checks[op] = {"acked": len(ids), "in_db": found}
    failures = [
        f"{op}: {c['acked']} acknowledged, only {c['in_db']} in the database"
        for op, c in checks.items()
        if c["in_db"] < c["acked"]
    ]
    return checks, failures
