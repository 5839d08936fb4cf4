"""Bulk load of the Ratings & Reviews export into the reviews database.

    python -m services.reviews.data.loader --data data/reviews --report data/reports/reviews

One transaction: TRUNCATE, drop the secondary indexes, COPY characteristics,
reviews (each with its photos' elements, read from the photos file before the
first review: photo_elements.py), photos and characteristic scores (each file
of 16 MB or more parsed and checked in a child process while Postgres ingests
the previous chunk; ServiceLoader), rebuild indexes, build the aggregates
(product_ratings, characteristics.score_sum/count over non-reported
reviews), move the id sequences past the loaded ids. A failed load rolls
back and leaves the previous data in place; re-running replaces it.

Rejected (never clamped or silently dropped; see rejects.csv):
- a review with a rating outside 1-5, and with it its photos and scores
  ("review 17 rejected: rating 7 outside 1-5");
- duplicate ids (the first row wins), rows with the wrong number of fields;
- photos and scores pointing to unknown or rejected reviews/characteristics;
- a score outside 1-5, or whose characteristic belongs to another product
  than its review.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg

from services.common.data.bulk_copy import (
    begin_bulk_load,
    copy_parsed,
    disable_triggers,
    enable_triggers,
)
from services.common.data.csv_parse import Converter, FileSpec
from services.common.data.parse_job import ParseJob
from services.common.data.photo_elements import stored_photos
from services.common.data.rebuild import drop_primary_keys, rebuild_after_copy
from services.common.data.report import LoadReport
from services.common.data.service_load import ServiceLoader
from services.common.data.values import (
    BOOL_TRUE_FALSE,
    ParentFile,
    Reject,
    int_map,
    map_set,
    parse_timestamp,
)
from services.reviews.app import CACHE_NAMESPACE, MIGRATIONS

from .columns import HEADERS

MAIN_TABLE = "reviews"  # the stack loads demo data when this one is empty

ID_TABLES = ("characteristics", "reviews", "reviews_photos", "characteristic_reviews")
TABLES = (*ID_TABLES, "product_ratings")

CHARACTERISTICS = FileSpec("characteristics.csv", "characteristics", HEADERS["characteristics.csv"])
REVIEWS = FileSpec(
    "reviews.csv",
    "reviews",
    HEADERS["reviews.csv"],
    copy_columns=(*HEADERS["reviews.csv"], "photo_elements"),
    nullable=frozenset({"response", "photo_elements"}),  # photo_elements NULL: no photos
)
PHOTOS = FileSpec(
    "reviews_photos.csv",
    "reviews_photos",
    HEADERS["reviews_photos.csv"],
    nullable=frozenset({"url"}),
)
SCORES = FileSpec(
    "characteristic_reviews.csv", "characteristic_reviews", HEADERS["characteristic_reviews.csv"]
)


@dataclass
class Parents(ParentFile):
    """What child rows are checked against: id -> product id (0 = not loaded)
    and why rejected ids were rejected. Compact: 4 bytes per id."""

    product: array = field(default_factory=int_map)
    reported: bytearray = field(default_factory=bytearray)  # reviews: 1 = reported


# Converter factories: module-level so a spawned parser process can unpickle
# them; each returns a closure (the hot path) whose .result() hands the
# id -> product map back to the loader.


def characteristics_converter(_: Any = None) -> Converter:
    parents = Parents("characteristic")
    product, fail = parents.product, parents.reject

    def convert(row: list[Any]) -> tuple[Any, ...]:
        cid = row[0]
        try:
            pid = int(row[1])
        except ValueError as exc:
            fail(cid, f"bad product_id: {exc}")
        if pid <= 0:
            fail(cid, f"product_id {pid} not positive")
        name = row[2]
        if not name.strip():
            fail(cid, "empty name")
        map_set(product, cid, pid)
        return (cid, pid, name)

    convert.result = lambda: parents  # type: ignore[attr-defined]
    return convert


def reviews_converter(photos_file: Path) -> Converter:
    """Each review goes in with its photos (migrations/005_photo_elements.sql),
    read from the photos file before the first review (photo_elements.py)."""
    photos = stored_photos(photos_file, PHOTOS).get
    parents = Parents("review")
    product, flags, fail = parents.product, parents.reported, parents.reject
    booleans = BOOL_TRUE_FALSE

    def convert(row: list[Any]) -> tuple[Any, ...]:
        rid = row[0]
        try:
            pid, rating, helpfulness = int(row[1]), int(row[2]), int(row[11])
            when = parse_timestamp(row[3])
        except ValueError as exc:
            fail(rid, f"bad value: {exc}")
        except Reject as exc:
            fail(rid, exc.reason)
        if pid <= 0:
            fail(rid, f"product_id {pid} not positive")
        if not 1 <= rating <= 5:
            fail(rid, f"rating {rating} outside 1-5")
        recommend, reported = booleans.get(row[6]), booleans.get(row[7])
        if recommend is None or reported is None:
            fail(rid, f"recommend/reported {row[6]!r}/{row[7]!r} not true/false")
        if rid >= len(product):
            map_set(product, rid, pid)
        else:
            product[rid] = pid
        if reported:  # rare: grow the flags only for reported reviews
            if rid >= len(flags):
                flags.extend(bytes(rid + 1 - len(flags) + 65536))
            flags[rid] = 1
        return (
            rid,
            pid,
            rating,
            when,
            row[4],
            row[5],
            recommend,
            reported,
            row[8],
            row[9],
            row[10],
            helpfulness,
            photos(rid),
        )

    convert.result = lambda: parents  # type: ignore[attr-defined]
    return convert


def photos_converter(reviews: Parents) -> Converter:
    product, n = reviews.product, len(reviews.product)

    def convert(row: list[Any]) -> tuple[Any, ...]:
        rid = int(row[1])
        if not (0 < rid < n and product[rid]):
            raise Reject(reviews.reason(rid))
        return (row[0], rid, row[2])

    return convert


def scores_converter(parents: tuple[Parents, Parents]) -> Converter:
    """Also sums each characteristic's scores over non-reported reviews, so
    characteristics.score_sum/score_count need no 19M-row join afterwards."""
    chars, reviews = parents
    cproduct, nc = chars.product, len(chars.product)
    rproduct, nr = reviews.product, len(reviews.product)
    reported, nrep = reviews.reported, len(reviews.reported)
    sums, counts = array("q", bytes(8 * nc)), array("i", bytes(4 * nc))

    def convert(row: list[Any]) -> tuple[Any, ...]:
        cid, rid, value = int(row[1]), int(row[2]), int(row[3])
        rp = rproduct[rid] if 0 < rid < nr else 0
        if not rp:
            raise Reject(reviews.reason(rid))
        cp = cproduct[cid] if 0 < cid < nc else 0
        if not cp:
            raise Reject(chars.reason(cid))
        if not 1 <= value <= 5:
            raise Reject(f"value {value} outside 1-5")
        if cp != rp:
            raise Reject(f"characteristic {cid} is for product {cp}, review {rid} for product {rp}")
        if not (rid < nrep and reported[rid]):
            sums[cid] += value
            counts[cid] += 1
        return (row[0], cid, rid, value)

    convert.result = lambda: (sums, counts)  # type: ignore[attr-defined]
    return convert


# Aggregates over the non-reported reviews, built in bulk once the rows are in.
PRODUCT_RATINGS_SQL = """
INSERT INTO product_ratings (product_id, r1, r2, r3, r4, r5, recommend_false, recommend_true)
SELECT product_id,
       count(*) FILTER (WHERE rating = 1), count(*) FILTER (WHERE rating = 2),
       count(*) FILTER (WHERE rating = 3), count(*) FILTER (WHERE rating = 4),
       count(*) FILTER (WHERE rating = 5),
       count(*) FILTER (WHERE NOT recommend), count(*) FILTER (WHERE recommend)
FROM reviews WHERE NOT reported GROUP BY product_id
"""
# characteristics.csv is COPYed into a temp table first and inserted once with
# its scores (summed by the scores parser): cheaper than COPY then UPDATE.
STAGING_SQL = """
CREATE TEMP TABLE characteristics_load (id integer, product_id integer, name text)
    ON COMMIT DROP;
CREATE TEMP TABLE characteristic_scores_load (id integer, score_sum bigint, score_count integer)
    ON COMMIT DROP;
"""
CHARACTERISTICS_LOAD = replace(CHARACTERISTICS, table="characteristics_load")
INSERT_CHARACTERISTICS_SQL = """
INSERT INTO characteristics (id, product_id, name, score_sum, score_count)
SELECT c.id, c.product_id, c.name, coalesce(s.score_sum, 0), coalesce(s.score_count, 0)
FROM characteristics_load c LEFT JOIN characteristic_scores_load s ON s.id = c.id
"""


async def _load_files(
    conn: asyncpg.Connection, data_dir: Path, report: LoadReport, parse_in_child: bool | None
) -> None:
    index_sql = await begin_bulk_load(conn, MIGRATIONS, TABLES)
    # The reviews carry their photos in the COPY; the photos' row trigger
    # would recompute them per copied photo: off for the load (inside its
    # transaction, so a failed load gets it back with the rollback).
    triggers = await disable_triggers(conn, ("reviews_photos",))
    await conn.execute(STAGING_SQL)
    # Unique ids are checked while parsing; building the primary keys after
    # the COPY (sorted, in parallel) beats 31M one-by-one btree inserts.
    primary_keys = await drop_primary_keys(conn, ID_TABLES)
    jobs: list[ParseJob] = []

    def parse(spec: FileSpec, make_converter: Any, context: Any) -> ParseJob:
        jobs.append(ParseJob(data_dir, spec, make_converter, context, parse_in_child))
        return jobs[-1]

    try:
        # Two independent parsers at a time: the next file's parsing overlaps
        # the COPY of the previous one on this transaction's one connection.
        chars_job = parse(CHARACTERISTICS_LOAD, characteristics_converter, None)
        reviews_job = parse(REVIEWS, reviews_converter, Path(data_dir) / PHOTOS.name)
        chars = await copy_parsed(conn, chars_job, report)
        reviews = await copy_parsed(conn, reviews_job, report)
        photos_job = parse(PHOTOS, photos_converter, reviews)
        scores_job = parse(SCORES, scores_converter, (chars, reviews))
        await copy_parsed(conn, photos_job, report)
        sums, counts = await copy_parsed(conn, scores_job, report)
    finally:
        for job in jobs:
            await asyncio.to_thread(job.close)

    started = time.perf_counter()
    await conn.copy_records_to_table(
        "characteristic_scores_load", records=[(i, sums[i], c) for i, c in enumerate(counts) if c]
    )
    await conn.execute(INSERT_CHARACTERISTICS_SQL)
    report.step("characteristics+scores", time.perf_counter() - started)
    await rebuild_after_copy(
        conn,
        report,
        index_sql,
        TABLES,
        ID_TABLES,
        primary_keys=primary_keys,
        aggregates={"product_ratings": PRODUCT_RATINGS_SQL},
    )
    await enable_triggers(conn, triggers)


load = ServiceLoader(
    "reviews",
    CACHE_NAMESPACE,
    MIGRATIONS,
    _load_files,
    "Load the reviews CSV export into Postgres.",
    tables=TABLES,
)
main = load.main

if __name__ == "__main__":
    main()
