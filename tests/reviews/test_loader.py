"""The reviews ETL: the loader on hand-written exports with every quirk, and
the generator -> loader round trip. Real Postgres, throwaway database."""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.common.data.photo_elements import photo_element
from services.common.data.values import EtlError
from services.common.db import drop_database
from services.reviews.data.generator import HEADERS, generate
from services.reviews.data.loader import load
from tests.conftest import PG_ADMIN_URL
from tests.stored_photos import awkward_photos_csv, stored_photos_out_of_step

CHARACTERISTICS = (
    "id,product_id,name\n"
    '1,1,"Fit"\n'
    '2,1,"Length"\n'
    '3,2,"Comfort"\n'
    '3,2,"Duplicate"\n'  # line 5: duplicate id
    "4,2\n"  # line 6: missing column
    '5,3,"Quality"\n'
)
REVIEW_HEADER = (
    "id,product_id,rating,date,summary,body,recommend,reported,reviewer_name,"
    "reviewer_email,response,helpfulness\n"
)
BODY_2 = 'Body with, commas and "quotes"\nand a second line'
REVIEWS = REVIEW_HEADER + (
    '1,1,5,1596080481467,"This product was great!","I really did or did not like this",'
    'true,false,"funtime","first.last@gmail.com",null,8\n'
    '2,1,4,1595564704345,"null","Body with, commas and ""quotes""\nand a second line",'
    'false,false,"mymainstreammother","first.last@gmail.com","",2\n'
    '3,1,7,1593558743779,"Bad rating","Seven stars",true,false,"x","x@y.z",null,0\n'  # line 5
    '4,2,3,1600000000000,"Reported","Hidden",true,true,"y","y@y.z","Thanks!",1\n'
    '5,2,2,1600000000001,"Two","Body two",false,false,"z","z@y.z",null,0\n'
    '5,2,2,1600000000001,"Dup","dup",false,false,"z","z@y.z",null,0\n'  # line 8
    '6,3,1,1600000000002,"One","Missing field",true,false,"w","w@y.z",null\n'  # line 9
)
PHOTOS = (
    "id,review_id,url\n"
    '1,1,"https://a/1"\n'
    '2,3,"https://a/3"\n'  # review 3 rejected
    '3,99,"https://a/99"\n'  # unknown review
    "4,2,null\n"  # NULL url is allowed
)
SCORES = (
    "id,characteristic_id,review_id,value\n"
    "1,1,1,5\n"
    "2,2,1,4\n"
    "3,1,2,3\n"
    "4,2,2,2\n"
    "5,1,3,5\n"  # line 6: review 3 rejected
    "6,2,3,5\n"  # line 7
    "7,3,4,4\n"  # reported review: loaded, left out of the aggregates
    "8,3,5,9\n"  # line 9: value outside 1-5
    "9,3,1,3\n"  # line 10: characteristic of product 2, review of product 1
    "10,42,5,3\n"  # line 11: unknown characteristic
    "11,3,5,2\n"
)


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/test_etl_{uuid.uuid4().hex[:10]}"
    yield url
    asyncio.run(drop_database(url))


def write_export(directory: Path, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    contents = {
        "characteristics.csv": CHARACTERISTICS,
        "reviews.csv": REVIEWS,
        "reviews_photos.csv": PHOTOS,
        "characteristic_reviews.csv": SCORES,
    }
    contents.update({name.removesuffix("_csv") + ".csv": text for name, text in files.items()})
    for name, text in contents.items():
        (directory / name).write_text(text, encoding="utf-8", newline="")
    return directory


def read_rejects(report_dir: Path) -> list[tuple[str, int, str]]:
    text = (report_dir / "rejects.csv").read_text(encoding="utf-8")
    return [
        (r["file"], int(r["line"]), r["reason"])
        for r in csv.DictReader(text.splitlines(keepends=True))
    ]


async def fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_hand_written_export(db_url: str, tmp_path: Path) -> None:
    data = write_export(tmp_path / "data")
    report = await load(db_url, data, tmp_path / "report", quiet=True)

    counts = {name: (f["read"], f["loaded"], f["rejected"]) for name, f in report["files"].items()}
    assert counts == {
        "characteristics.csv": (6, 4, 2),
        "reviews.csv": (7, 4, 3),
        "reviews_photos.csv": (4, 2, 2),
        "characteristic_reviews.csv": (11, 6, 5),
    }
    assert read_rejects(tmp_path / "report") == [
        ("characteristics.csv", 5, "duplicate id 3"),
        ("characteristics.csv", 6, "expected 3 fields, got 2"),
        ("reviews.csv", 5, "rating 7 outside 1-5"),
        ("reviews.csv", 8, "duplicate id 5"),
        ("reviews.csv", 9, "expected 12 fields, got 11"),
        ("reviews_photos.csv", 3, "review 3 rejected: rating 7 outside 1-5"),
        ("reviews_photos.csv", 4, "unknown review 99"),
        ("characteristic_reviews.csv", 6, "review 3 rejected: rating 7 outside 1-5"),
        ("characteristic_reviews.csv", 7, "review 3 rejected: rating 7 outside 1-5"),
        ("characteristic_reviews.csv", 9, "value 9 outside 1-5"),
        (
            "characteristic_reviews.csv",
            10,
            "characteristic 3 is for product 2, review 1 for product 1",
        ),
        ("characteristic_reviews.csv", 11, "unknown characteristic 42"),
    ]

    reviews = await fetch(
        db_url,
        "SELECT id, rating, date, summary, body, recommend, reported,"
        " response, helpfulness FROM reviews ORDER BY id",
    )
    assert [r[0] for r in reviews] == [1, 2, 4, 5]
    assert reviews[0][2] == datetime(2020, 7, 30, 3, 41, 21, 467000, tzinfo=UTC)
    assert reviews[0][7] is None  # bare null -> NULL
    assert reviews[1][7] == ""  # quoted empty -> ''
    assert reviews[1][3] == "null"  # quoted "null" -> the string
    assert reviews[1][4] == BODY_2  # commas, doubled quotes, newline
    assert reviews[2][6] is True and reviews[2][7] == "Thanks!"
    photos = await fetch(db_url, "SELECT id, review_id, url FROM reviews_photos ORDER BY id")
    assert photos == [(1, 1, "https://a/1"), (4, 2, None)]

    assert await fetch(db_url, "SELECT * FROM product_ratings ORDER BY product_id") == [
        (1, 0, 0, 0, 1, 1, 1, 1),  # reviews 1 (5, recommended) and 2 (4, not)
        (2, 0, 1, 0, 0, 0, 1, 0),  # review 5; review 4 is reported
    ]
    assert await fetch(
        db_url,
        "SELECT id, product_id, name, score_sum, score_count FROM characteristics ORDER BY id",
    ) == [
        (1, 1, "Fit", 8, 2),
        (2, 1, "Length", 6, 2),
        (3, 2, "Comfort", 2, 1),
        (5, 3, "Quality", 0, 0),
    ]
    assert report["status"] == "ok"
    assert json.loads((tmp_path / "report" / "load-report.json").read_text())["totals"] == {
        "read": 28,
        "loaded": 16,
        "repaired": 0,
        "rejected": 12,
    }


@pytest.mark.parametrize("parse_in_child", [False, True])
async def test_reviews_are_copied_with_their_photos(
    db_url: str, tmp_path: Path, parse_in_child: bool
) -> None:
    """Each review is written with its photos' elements, read from the photos
    file before the reviews: byte for byte what the trigger stores, for urls
    that need every kind of escaping, listed out of id order. The photos'
    rejects are reported once."""
    data = write_export(tmp_path / "data", reviews_photos_csv=awkward_photos_csv("review_id", 1, 2))
    report = await load(
        db_url, data, tmp_path / "report", quiet=True, parse_in_child=parse_in_child
    )
    stats = report["files"]["reviews_photos.csv"]
    assert (stats["read"], stats["loaded"], stats["rejected"]) == (12, 10, 2)
    assert [r for r in read_rejects(tmp_path / "report") if r[0] == "reviews_photos.csv"] == [
        # Lines 14 and 15: two urls above span two and three lines.
        ("reviews_photos.csv", 14, "duplicate id 20"),
        ("reviews_photos.csv", 15, "bad value: invalid literal for int() with base 10: 'x'"),
    ]
    conn = await asyncpg.connect(db_url)
    try:
        for photo_id, url, element in await conn.fetch(
            "SELECT id, url, element FROM reviews_photos"
        ):
            assert photo_element(photo_id, url) == element
        assert await stored_photos_out_of_step(conn, "reviews") == []
        stored = dict(await conn.fetch("SELECT id, photo_elements FROM reviews ORDER BY id"))
    finally:
        await conn.close()
    assert stored[1].count('"url":') == 9 and stored[2].count('"url":') == 1
    assert stored[4] is None and stored[5] is None


async def test_reload_is_idempotent_and_sequences_continue(db_url: str, tmp_path: Path) -> None:
    data = write_export(tmp_path / "data")
    await load(db_url, data, tmp_path / "r1", quiet=True)
    tables = (
        "reviews",
        "reviews_photos",
        "characteristics",
        "characteristic_reviews",
        "product_ratings",
    )
    before = {t: await fetch(db_url, f"SELECT * FROM {t} ORDER BY 1") for t in tables}
    await load(db_url, data, tmp_path / "r2", parse_in_child=False, quiet=True)
    after = {t: await fetch(db_url, f"SELECT * FROM {t} ORDER BY 1") for t in tables}
    assert after == before
    assert read_rejects(tmp_path / "r2") == read_rejects(tmp_path / "r1")

    conn = await asyncpg.connect(db_url)
    probe = conn.transaction()  # rolled back: the inserts only probe the sequences
    await probe.start()
    try:
        assert (
            await conn.fetchval(
                "INSERT INTO characteristics (product_id, name) VALUES (9, 'Fit') RETURNING id"
            )
            == 6
        )
        review = await conn.fetchval(
            "INSERT INTO reviews (product_id, rating, body, recommend, reviewer_name,"
            " reviewer_email) VALUES (9, 5, 'b', true, 'n', 'e') RETURNING id"
        )
        assert review == 6  # max loaded id is 5 (review 6 was rejected)
        assert (
            await conn.fetchval(
                "INSERT INTO reviews_photos (review_id, url) VALUES (6, 'u') RETURNING id"
            )
            == 5
        )
        assert (
            await conn.fetchval(
                "INSERT INTO characteristic_reviews (characteristic_id, review_id, value)"
                " VALUES (6, 6, 3) RETURNING id"
            )
            == 12
        )
    finally:
        await probe.rollback()
        await conn.close()
    indexes = await fetch(
        db_url,
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
        " AND indexname LIKE '%\\_idx' ORDER BY 1",
    )
    keys = await fetch(
        db_url,
        "SELECT conname FROM pg_constraint WHERE contype = 'p'"
        " AND connamespace = 'public'::regnamespace ORDER BY 1",
    )
    assert [k[0] for k in keys] == [  # dropped for the COPY, rebuilt after
        "cache_outbox_pkey",  # not the loader's: its writes' invalidations
        "characteristic_reviews_pkey",
        "characteristics_pkey",
        "product_ratings_pkey",
        "reviews_photos_pkey",
        "reviews_pkey",
        "schema_migrations_pkey",
    ]
    assert [i[0] for i in indexes] == [
        "characteristic_reviews_review_idx",
        "characteristics_product_idx",
        "reviews_photos_review_idx",
        "reviews_product_helpful_idx",
        "reviews_product_newest_idx",
    ]


async def test_failed_load_keeps_previous_data(db_url: str, tmp_path: Path) -> None:
    await load(db_url, write_export(tmp_path / "good"), tmp_path / "r1", quiet=True)
    before = await fetch(db_url, "SELECT id, body FROM reviews ORDER BY id")
    bad = write_export(tmp_path / "bad", reviews_csv=REVIEWS.replace("rating,", "stars,", 1))
    with pytest.raises(EtlError, match=r"reviews\.csv: header lacks column\(s\) rating"):
        await load(db_url, bad, tmp_path / "r2", quiet=True)
    assert await fetch(db_url, "SELECT id, body FROM reviews ORDER BY id") == before
    failed = json.loads((tmp_path / "r2" / "load-report.json").read_text())
    assert failed["status"] == "failed" and "rating" in failed["error"]


async def test_old_export_header_spaces_camel_case_and_iso_dates(
    db_url: str, tmp_path: Path
) -> None:
    old_reviews = (
        "id, productId, rating, date, summary, body, recommend, reported, reviewerName,"
        " reviewer_email, response, helpfulness\n"
        '1, 1, 5, "2019-04-14", "Old", "Old body", true, false, "n", "e@x.y", null, 3\n'
        '2, 1, 2, "2019-02-30", "Bad day", "b", true, false, "n", "e@x.y", null, 0\n'
    )
    data = write_export(
        tmp_path / "data",
        characteristics_csv='id, productId, name\n1, 1, "Fit"\n',
        reviews_csv=old_reviews,
        reviews_photos_csv='id, reviewId, url\n1, 1, "https://a/1"\n',
        characteristic_reviews_csv="id, characteristicId, reviewId, value\n1, 1, 1, 4\n",
    )
    report = await load(db_url, data, tmp_path / "report", quiet=True)
    assert await fetch(db_url, "SELECT id, product_id, date, summary, response FROM reviews") == [
        (1, 1, datetime(2019, 4, 14, tzinfo=UTC), "Old", None)
    ]
    assert read_rejects(tmp_path / "report") == [
        ("reviews.csv", 3, "date '2019-02-30' is not a valid date")
    ]
    assert report["totals"]["loaded"] == 4
    assert await fetch(db_url, "SELECT score_sum, score_count FROM characteristics") == [(4, 1)]


# ---------------------------------------------------------------- generator round trip


def test_generator_is_deterministic_with_export_headers(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", scale=0.0005, seed=7, workers=2)
    generate(tmp_path / "b", scale=0.0005, seed=7, workers=1)
    generate(tmp_path / "c", scale=0.0005, seed=8, workers=1)
    for name, header in HEADERS.items():
        text = (tmp_path / "a" / name).read_bytes()
        assert text == (tmp_path / "b" / name).read_bytes(), name
        assert text != (tmp_path / "c" / name).read_bytes(), name
        assert text.split(b"\n", 1)[0].decode() == ",".join(header)
    assert a["rows"]["reviews.csv"] == round(5_774_952 * 0.0005)
    reviews = (tmp_path / "a" / "reviews.csv").read_text()
    assert ",null," in reviews and ',"",' in reviews and '""' in reviews
    assert ",true,false," in reviews and ",false,false," in reviews


def recount(data: Path, bad_ids: set[int]) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Aggregates straight from the CSV files, independently of the loader."""
    ratings: dict[int, list[int]] = defaultdict(lambda: [0] * 7)
    reported: set[int] = set()
    with open(data / "reviews.csv", newline="") as f:
        for row in csv.DictReader(f):
            rid = int(row["id"])
            if rid in bad_ids:
                continue
            if row["reported"] == "true":
                reported.add(rid)
                continue
            counts = ratings[int(row["product_id"])]
            counts[int(row["rating"]) - 1] += 1
            counts[5 + (row["recommend"] == "true")] += 1
    scores: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    with open(data / "characteristic_reviews.csv", newline="") as f:
        for row in csv.DictReader(f):
            rid = int(row["review_id"])
            if rid not in bad_ids and rid not in reported:
                scores[int(row["characteristic_id"])][0] += int(row["value"])
                scores[int(row["characteristic_id"])][1] += 1
    return ratings, scores


@pytest.mark.parametrize("scale", [0.001, 0.01])
async def test_generator_loader_round_trip(db_url: str, tmp_path: Path, scale: float) -> None:
    manifest = generate(tmp_path / "data", scale=scale, seed=3)
    report = await load(db_url, tmp_path / "data", tmp_path / "report", quiet=True)
    bad_ids = set(manifest["bad_rating_review_ids"])
    if scale == 0.001:
        assert not bad_ids and report["totals"]["rejected"] == 0
    else:
        assert bad_ids  # the generator's "few ratings outside 1-5"
    for name, f in report["files"].items():
        assert f["read"] == manifest["rows"][name]
        assert f["rejected"] == manifest["expected_rejects"][name], name
    reasons = Counter(
        reason.split(":")[-1].strip() for _, _, reason in read_rejects(tmp_path / "report")
    )
    assert all("outside 1-5" in r for r in reasons)

    ratings, scores = await asyncio.to_thread(recount, tmp_path / "data", bad_ids)
    loaded = await fetch(db_url, "SELECT * FROM product_ratings ORDER BY product_id")
    assert loaded == [(p, *ratings[p]) for p in sorted(ratings)]
    chars = await fetch(
        db_url, "SELECT id, score_sum, score_count FROM characteristics ORDER BY id"
    )
    assert len(chars) == manifest["rows"]["characteristics.csv"]
    assert chars == [(c, *scores.get(c, (0, 0))) for c, _, _ in chars]
    # Some products have no reviews at all, some have many.
    per_product = Counter(p for p, *_ in await fetch(db_url, "SELECT product_id FROM reviews"))
    assert len(per_product) < manifest["products"]
    assert max(per_product.values()) > 5 * (sum(per_product.values()) / len(per_product))
