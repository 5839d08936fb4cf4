"""Bulk load of the Questions & Answers export into the qa database.

    python -m services.qa.loader --data data/qa --report data/reports/qa [--dsn ...]

One transaction: TRUNCATE, drop the secondary indexes, COPY questions,
answers and answer photos (each file parsed and checked in a child process
while Postgres ingests the previous chunk), rebuild the indexes, ANALYZE,
move the id sequences past the loaded ids. A failed load rolls back and
leaves the previous data in place; re-running replaces it. After the commit
the service's cache namespace is flushed, so running services never serve
pages of the old data.

Rejected (never silently dropped; see rejects.csv beside load-report.json):
- rows with the wrong number of fields, duplicate or out-of-range ids, a
  bare `null` where a value is required, unparseable numbers, dates or
  booleans, a non-positive product id, a negative helpful count;
- answers whose question is unknown or was itself rejected ("unknown
  question 17", "question 17 rejected: ..."), and photos whose answer is
  unknown or rejected, the same way.
A bare `null` photo url is loaded as NULL (the export has a few).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import asyncpg

from services.common.etl import (
    BOOL_ANY,
    Converter,
    FileSpec,
    IdBitmap,
    LoadReport,
    Reject,
    bulk_session,
    copy_file,
    drop_indexes,
    indexes_file,
    load_service,
    loader_main,
    parse_timestamp,
    rebuild_after_copy,
    truncate,
)

from .app import CACHE_NAMESPACE, MIGRATIONS

MAIN_TABLE = "questions"  # the stack loads demo data when this one is empty
TABLES = ("questions", "answers", "answers_photos")

QUESTIONS = FileSpec(
    "questions.csv",
    "questions",
    (
        "id",
        "product_id",
        "body",
        "date_written",
        "asker_name",
        "asker_email",
        "reported",
        "helpful",
    ),
)
ANSWERS = FileSpec(
    "answers.csv",
    "answers",
    (
        "id",
        "question_id",
        "body",
        "date_written",
        "answerer_name",
        "answerer_email",
        "reported",
        "helpful",
    ),
)
PHOTOS = FileSpec(
    "answers_photos.csv", "answers_photos", ("id", "answer_id", "url"), nullable=frozenset({"url"})
)


@dataclass
class Loaded:
    """Which ids of a parent file were loaded (one bit each, so 7M answers
    cost under 1 MB to hand to the next parser) and why rejected ones were."""

    kind: str
    ids: IdBitmap = field(default_factory=IdBitmap)
    rejected: dict[int, str] = field(default_factory=dict)

    def reason(self, i: int) -> str:
        why = self.rejected.get(i)
        return f"{self.kind} {i} rejected: {why}" if why else f"unknown {self.kind} {i}"


# Converter factories: module-level so that a spawned parser process can
# unpickle them; each returns a closure (the hot path), and the two parent
# files' closures carry .result() handing their Loaded back to the loader.


def _post_converter(kind: str, parent: Loaded | None) -> Converter:
    """questions.csv (parent None: column 1 is a product id) or answers.csv
    (column 1 must be a loaded question): the two files share a layout."""
    loaded = Loaded(kind)
    add = loaded.ids.add
    parents = parent.ids if parent is not None else None
    booleans = BOOL_ANY  # 0/1 in these files; true/false accepted too

    def fail(row_id: int, reason: str) -> NoReturn:
        loaded.rejected[row_id] = reason
        raise Reject(reason)

    def convert(row: list[Any]) -> tuple[Any, ...]:
        row_id = row[0]
        try:
            owner, helpful = int(row[1]), int(row[7])
            when = parse_timestamp(row[3], "date_written")
        except ValueError as exc:
            fail(row_id, f"bad value: {exc}")
        except Reject as exc:
            fail(row_id, exc.reason)
        if parents is None:
            if owner <= 0:
                fail(row_id, f"product_id {owner} not positive")
        elif owner not in parents:
            fail(row_id, parent.reason(owner))
        reported = booleans.get(row[6])
        if reported is None:
            fail(row_id, f"reported {row[6]!r} is not 0/1")
        if helpful < 0:
            fail(row_id, f"helpful {helpful} negative")
        add(row_id)
        return (row_id, owner, row[2], when, row[4], row[5], reported, helpful)

    convert.result = lambda: loaded  # type: ignore[attr-defined]
    return convert


def questions_converter(_: Any = None) -> Converter:
    return _post_converter("question", None)


def answers_converter(questions: Loaded) -> Converter:
    return _post_converter("answer", questions)


def photos_converter(answers: Loaded) -> Converter:
    ids = answers.ids

    def convert(row: list[Any]) -> tuple[Any, ...]:
        answer_id = int(row[1])
        if answer_id not in ids:
            raise Reject(answers.reason(answer_id))
        return (row[0], answer_id, row[2])

    return convert


async def _load_files(
    conn: asyncpg.Connection, data_dir: Path, report: LoadReport, in_process: bool
) -> None:
    index_sql = indexes_file(MIGRATIONS)
    await bulk_session(conn)
    await truncate(conn, TABLES)
    if index_sql:
        await drop_indexes(conn, index_sql)
    kw = {"in_process": in_process}
    questions = await copy_file(conn, data_dir, QUESTIONS, questions_converter, None, report, **kw)
    answers = await copy_file(conn, data_dir, ANSWERS, answers_converter, questions, report, **kw)
    await copy_file(conn, data_dir, PHOTOS, photos_converter, answers, report, **kw)

    await rebuild_after_copy(conn, report, index_sql, TABLES, TABLES)


async def load(
    dsn: str,
    data_dir: Path | str,
    report_dir: Path | str,
    *,
    in_process: bool | None = True,
    quiet: bool = False,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """Replace the qa database's content with the export in `data_dir`; writes
    load-report.json and rejects.csv into `report_dir` and returns the report.
    Then flushes the service's cache (`redis_url`, default from REDIS_URL).
    `in_process=False` parses in this process (no overlap; debugging)."""
    return await load_service(
        "qa",
        CACHE_NAMESPACE,
        MIGRATIONS,
        _load_files,
        dsn,
        data_dir,
        report_dir,
        in_process=in_process,
        quiet=quiet,
        redis_url=redis_url,
    )


def main(argv: list[str] | None = None) -> None:
    loader_main("qa", load, "Load the Q&A CSV export into Postgres.", argv)


if __name__ == "__main__":
    main()
