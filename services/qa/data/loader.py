"""Bulk load of the Questions & Answers export into the qa database.

    python -m services.qa.data.loader --data data/qa --report data/reports/qa [--dsn ...]

One transaction: TRUNCATE, drop the secondary indexes, COPY questions,
answers (each with its photos' elements, 011_answer_photo_elements.sql, read
from the photos file before the first answer: photo_elements.py) and answer
photos (each file of 16 MB or more parsed and checked in a child process
while Postgres ingests the previous chunk; ServiceLoader; the triggers are
disabled for the COPY), rebuild the indexes, ANALYZE, move the id sequences
past the loaded ids. The rows' stored elements (migrations 008 and 013) are
generated columns: the COPY computes them. A failed load rolls back and
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
from typing import Any

import asyncpg

from services.common.data.bulk_copy import (
    begin_bulk_load,
    copy_file,
    disable_triggers,
    enable_triggers,
)
from services.common.data.csv_parse import Converter, FileSpec
from services.common.data.photo_elements import stored_photos
from services.common.data.rebuild import rebuild_after_copy
from services.common.data.report import LoadReport
from services.common.data.service_load import ServiceLoader
from services.common.data.values import BOOL_ANY, IdBitmap, ParentFile, Reject, parse_timestamp
from services.qa.app import CACHE_NAMESPACE, MIGRATIONS

from .columns import HEADERS

MAIN_TABLE = "questions"  # the stack loads demo data when this one is empty
TABLES = ("questions", "answers", "answers_photos")

QUESTIONS = FileSpec("questions.csv", "questions", HEADERS["questions.csv"])
ANSWERS = FileSpec(
    "answers.csv",
    "answers",
    HEADERS["answers.csv"],
    copy_columns=(*HEADERS["answers.csv"], "photo_elements"),
    nullable=frozenset({"photo_elements"}),  # NULL: the answer has no photos
)
PHOTOS = FileSpec(
    "answers_photos.csv",
    "answers_photos",
    HEADERS["answers_photos.csv"],
    nullable=frozenset({"url"}),
)


@dataclass
class Loaded(ParentFile):
    """Which ids of a parent file were loaded (one bit each, so 7M answers
    cost under 1 MB to hand to the next parser) and why rejected ones were."""

    ids: IdBitmap = field(default_factory=IdBitmap)


# Converter factories: module-level so that a spawned parser process can
# unpickle them; each returns a closure (the hot path), and the two parent
# files' closures carry .result() handing their Loaded back to the loader.


def _post_converter(
    kind: str, parent: Loaded | None, photos: dict[int, str] | None = None
) -> Converter:
    """questions.csv (parent None: column 1 is a product id) or answers.csv
    (column 1 must be a loaded question; each answer written with its
    `photos`): the two files share a layout."""
    loaded = Loaded(kind)
    add = loaded.ids.add
    parents = parent.ids if parent is not None else None
    booleans = BOOL_ANY  # 0/1 in these files; true/false accepted too
    fail = loaded.reject

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
        if photos is None:
            return (row_id, owner, row[2], when, row[4], row[5], reported, helpful)
        return (row_id, owner, row[2], when, row[4], row[5], reported, helpful, photos.get(row_id))

    convert.result = lambda: loaded  # type: ignore[attr-defined]
    return convert


def questions_converter(_: Any = None) -> Converter:
    return _post_converter("question", None)


def answers_converter(context: tuple[Loaded, Path]) -> Converter:
    questions, photos_file = context
    return _post_converter("answer", questions, stored_photos(photos_file, PHOTOS))


def photos_converter(answers: Loaded) -> Converter:
    ids = answers.ids

    def convert(row: list[Any]) -> tuple[Any, ...]:
        answer_id = int(row[1])
        if answer_id not in ids:
            raise Reject(answers.reason(answer_id))
        return (row[0], answer_id, row[2])

    return convert


async def _load_files(
    conn: asyncpg.Connection, data_dir: Path, report: LoadReport, parse_in_child: bool | None
) -> None:
    index_sql = await begin_bulk_load(conn, MIGRATIONS, TABLES)
    # The answers carry their photos in the COPY; the photos' row trigger
    # would recompute them per copied photo: off for the load (inside its
    # transaction, so a failed load gets it back with the rollback).
    triggers = await disable_triggers(conn, TABLES)
    kw = {"parse_in_child": parse_in_child}
    questions = await copy_file(conn, data_dir, QUESTIONS, questions_converter, None, report, **kw)
    answers_context = (questions, Path(data_dir) / PHOTOS.name)
    answers = await copy_file(
        conn, data_dir, ANSWERS, answers_converter, answers_context, report, **kw
    )
    await copy_file(conn, data_dir, PHOTOS, photos_converter, answers, report, **kw)

    await rebuild_after_copy(conn, report, index_sql, TABLES, TABLES)
    await enable_triggers(conn, triggers)


load = ServiceLoader(
    "qa",
    CACHE_NAMESPACE,
    MIGRATIONS,
    _load_files,
    "Load the Q&A CSV export into Postgres.",
    tables=TABLES,
)
main = load.main

if __name__ == "__main__":
    main()
