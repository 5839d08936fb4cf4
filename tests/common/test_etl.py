"""The shared ETL mechanics on small hand-written files, against a real
Postgres (a throwaway database per module)."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.common.data.bulk_copy import bulk_session, copy_file, truncate
from services.common.data.csv_parse import (
    FileParser,
    FileSpec,
    close_unterminated_quote,
    csv_line,
    map_header,
    quoted_fields,
)
from services.common.data.generating import ids_with_gaps, quote, rng_for, skewed_counts
from services.common.data.rebuild import (
    create_indexes,
    drop_indexes,
    index_names,
    reset_sequences,
)
from services.common.data.report import LoadReport
from services.common.data.values import (
    EtlError,
    IdBitmap,
    Reject,
    epoch_ms_to_text,
    parse_timestamp,
)
from services.common.db import drop_database, ensure_database
from tests.conftest import PG_ADMIN_URL

# ---------------------------------------------------------------- pure helpers


def test_epoch_ms_is_exact_utc_text() -> None:
    assert epoch_ms_to_text(1596080481467) == "2020-07-30 03:41:21.467+00"
    assert epoch_ms_to_text(0) == "1970-01-01 00:00:00.000+00"
    rng = random.Random(5)
    for _ in range(2000):
        ms = rng.randrange(-(10**12), 4 * 10**12)
        expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
        assert epoch_ms_to_text(ms) == expected.strftime("%Y-%m-%d %H:%M:%S.") + (
            f"{expected.microsecond // 1000:03d}+00"
        )


def test_parse_timestamp_accepts_iso_day_and_rejects_garbage() -> None:
    assert parse_timestamp("2019-04-14") == "2019-04-14 00:00:00+00"
    assert parse_timestamp("1596080481467") == "2020-07-30 03:41:21.467+00"
    for bad in ("2019-02-30", "14/04/2019", "", "12.5", "null"):
        with pytest.raises(Reject):
            parse_timestamp(bad)


def test_close_unterminated_quote() -> None:
    assert close_unterminated_quote('1,2,"a","b\n') == '1,2,"a","b"\n'
    assert close_unterminated_quote('1,2,"a","b\r\n') == '1,2,"a","b"\r\n'
    assert close_unterminated_quote('1,2,"a","b"\n') is None
    assert close_unterminated_quote('1,2,"say ""hi""","b\n') == '1,2,"say ""hi""","b"\n'


def test_quoted_fields() -> None:
    assert quoted_fields('1,null,"null", "x,y",""\n') == [False, False, True, True, True]
    assert quoted_fields('"a""b",null') == [True, False]


def test_id_bitmap_detects_duplicates_and_stays_small() -> None:
    seen = IdBitmap()
    assert seen.add(5) and not seen.add(5)
    assert seen.add(20_000_000) and not seen.add(20_000_000)
    assert 5 in seen and 6 not in seen
    assert len(seen.bits) < 6 * 2**20  # 20M ids in a few MB, not a 1 GB set
    assert seen.add(2**31 - 1) and not seen.add(2**31 - 1)  # sparse outlier
    assert len(seen.bits) < 6 * 2**20


def test_header_mapping_ignores_case_underscores_and_spaces() -> None:
    assert map_header(["id", " styleId", " URL"], ["id", "style_id", "url"], "f") == [0, 1, 2]
    assert map_header(["url", "Id", "style_id"], ["id", "style_id", "url"], "f") == [1, 2, 0]
    with pytest.raises(EtlError, match=r"f: header lacks column.*style_id"):
        map_header(["id", "url"], ["id", "style_id", "url"], "f")


def test_csv_line_null_versus_empty_string() -> None:
    assert csv_line([1, None, "", 'say "hi", ok\nbye', True, "null"]) == (
        '1,,"","say ""hi"", ok\nbye",True,"null"'
    )


def test_generating_helpers_are_deterministic_and_exact() -> None:
    a = skewed_counts(rng_for(3, "x"), 1000, 5000)
    assert a == skewed_counts(rng_for(3, "x"), 1000, 5000)
    assert sum(a) == 5000
    assert a.count(0) > 50  # some groups have none
    assert sorted(a)[500] < 10  # most have few
    ids = ids_with_gaps(rng_for(3, "y"), 10_000)
    assert all(x < y for x, y in itertools.pairwise(ids))
    assert ids[-1] > 10_000  # gaps happened
    assert quote('a "b", c') == '"a ""b"", c"'


# ---------------------------------------------------------------- the parser

ITEMS = FileSpec(
    "items.csv", "items", ("id", "style_id", "label", "note"), nullable=frozenset({"note"})
)


def item_converter(_: Any = None) -> Any:
    def convert(row: list[Any]) -> tuple[Any, ...]:
        style = int(row[1])
        if style > 100:
            raise Reject(f"style {style} too large")
        return (row[0], style, row[2], row[3])

    return convert


def parse(path: Path, spec: FileSpec = ITEMS) -> tuple[list[list[str]], list[Any], Any]:
    parser = FileParser(path, spec, item_converter())
    chunks = list(parser.chunks())
    text = b"".join(c.data for c in chunks).decode()
    rows = list(csv.reader(text.splitlines(keepends=True)))
    rejects = [r for c in chunks for r in c.rejects]
    return rows, rejects, parser.stats


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_parser_quirks_and_reject_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "items.csv",
        (
            "id,styleId,label,note\n"
            '1,1,"plain",null\n'  # bare null -> NULL
            '2,1,"null","null"\n'  # quoted "null" -> the string
            '3,2,"a, b ""c""\nsecond line",""\n'  # commas, doubled quotes, newline; ''
            '4,2,"short row"\n'  # missing column (line 6)
            '1,3,"dup",null\n'  # duplicate id (line 7)
            '5,999,"big",null\n'  # converter Reject (line 8)
            '6,x,"bad int",null\n'  # ValueError (line 9)
            '7,3,null,"n"\n'  # bare null in a NOT NULL column
            "\n"  # blank line: no record
            '8,4,"last",null\n'
        ),
    )
    rows, rejects, stats = parse(path)
    assert rows == [
        ["1", "1", "plain", ""],
        ["2", "1", "null", "null"],
        ["3", "2", 'a, b "c"\nsecond line', ""],
        ["8", "4", "last", ""],
    ]
    assert [(r[1], r[2]) for r in rejects] == [
        (6, "expected 4 fields, got 3"),
        (7, "duplicate id 1"),
        (8, "style 999 too large"),
        (9, "bad value: invalid literal for int() with base 10: 'x'"),
        (10, "label is null"),
    ]
    assert rejects[0][3] == '4,2,"short row"\n'  # the raw text, as in the file
    assert (stats.read, stats.loaded, stats.rejected, stats.repaired) == (9, 4, 5, 0)


def test_parser_broken_quote_is_rejected_not_lost(tmp_path: Path) -> None:
    # A field without its closing quote swallows the next line up to its first
    # quote; the text after that quote makes the record unparseable, so both
    # lines go to rejects (raw text kept) and parsing carries on after them.
    path = write(
        tmp_path / "items.csv",
        (
            "id,style_id,label,note\n"
            '1,1,"ok",null\n'
            '2,1,"broken,null\n'
            '3,1,"swallowed",null\n'
            '4,1,"also swallowed",null\n'
        ),
    )
    rows, rejects, stats = parse(path)
    assert [r[0] for r in rows] == ["1", "4"]
    assert [(r[1], r[3]) for r in rejects] == [(3, '2,1,"broken,null\n3,1,"swallowed",null\n')]
    assert rejects[0][2].startswith("unparseable CSV")
    assert (stats.read, stats.loaded, stats.rejected) == (3, 2, 1)


def test_repair_hook_fixes_and_counts(tmp_path: Path) -> None:
    spec = FileSpec(
        "photos.csv",
        "items",
        ITEMS.columns,
        nullable=ITEMS.nullable,
        repair=close_unterminated_quote,
    )
    path = write(
        tmp_path / "photos.csv",
        (
            "id,style_id,label,note\n"
            '1,1,"a","https://x/1"\n'
            '2,1,"b","https://x/2\n'  # closing quote lost
            '3,1,"c","https://x/3"\n'
        ),
    )
    rows, _, stats = parse(path, spec)
    assert rows[1] == ["2", "1", "b", "https://x/2"] and len(rows) == 3
    assert (stats.repaired, stats.rejected) == (1, 0)
    # Without the hook the same file loses row 3 into row 2's field.
    rows, _, stats = parse(path)
    assert [r[0] for r in rows] == ["1"] and stats.rejected == 1


def test_missing_header_column_is_fatal(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "id,style_id,label\n1,1,x\n")
    with pytest.raises(EtlError, match=r"items\.csv: header lacks column.*note"):
        parse(path)


def test_index_names_ignore_comments() -> None:
    sql = (
        "-- CREATE INDEX IF NOT EXISTS commented_idx ON t (a);\n"
        "CREATE INDEX IF NOT EXISTS a_idx ON t (a);\n"
        "create unique index if not exists b_idx\n  ON t (b) WHERE b > 0;\n"
    )
    assert index_names(sql) == ["a_idx", "b_idx"]


# ---------------------------------------------------------------- against Postgres


@pytest.fixture(scope="module")
def etl_db() -> Iterator[str]:
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/test_etl_{uuid.uuid4().hex[:10]}"
    asyncio.run(ensure_database(url))
    yield url
    asyncio.run(drop_database(url))


SCHEMA = """
DROP TABLE IF EXISTS items;
CREATE TABLE items (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    style_id integer NOT NULL,
    label text NOT NULL,
    note text
);
"""


@pytest.mark.parametrize("parse_in_child", [True, False])
async def test_copy_round_trip_null_empty_and_sequences(
    etl_db: str, tmp_path: Path, parse_in_child: bool
) -> None:
    write(
        tmp_path / "items.csv",
        (
            "id, styleId, label, note\n"  # the old export's spaces after commas
            '10,1,"plain",null\n'
            '20,1,"null",""\n'
            '30,2,"a, b ""c""\nnext","x"\n'
            '30,2,"dup",null\n'
            '40,999,"big",null\n'
        ),
    )
    (tmp_path / "idx.sql").write_text(
        "CREATE INDEX IF NOT EXISTS items_style_idx ON items (style_id);\n"
    )
    conn = await asyncpg.connect(etl_db)
    try:
        await conn.execute(SCHEMA)
        await conn.execute("INSERT INTO items (style_id, label) VALUES (5, 'old')")
        report = LoadReport(tmp_path / "report", "test")
        async with conn.transaction():
            await bulk_session(conn)
            await truncate(conn, ["items"])
            assert await drop_indexes(conn, tmp_path / "idx.sql") == ["items_style_idx"]
            await copy_file(
                conn, tmp_path, ITEMS, item_converter, None, report, parse_in_child=parse_in_child
            )
            await create_indexes(conn, tmp_path / "idx.sql")
            assert await reset_sequences(conn, ["items"]) == {"items": 31}  # 40 was rejected
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
        result = report.finish(quiet=True)
        rows = await conn.fetch("SELECT id, style_id, label, note FROM items ORDER BY id")
        assert [tuple(r) for r in rows] == [
            (10, 1, "plain", None),
            (20, 1, "null", ""),
            (30, 2, 'a, b "c"\nnext', "x"),
        ]
        assert (
            await conn.fetchval(
                "INSERT INTO items (style_id, label) VALUES (1, 'new') RETURNING id"
            )
            == 31
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_style_idx'"
            )
            == 1
        )
    finally:
        await conn.close()
    assert result["files"]["items.csv"] == {
        "read": 5,
        "loaded": 3,
        "repaired": 0,
        "rejected": 2,
        "parse_seconds": result["files"]["items.csv"]["parse_seconds"],
        "seconds": result["files"]["items.csv"]["seconds"],
    }
    saved = json.loads((tmp_path / "report" / "load-report.json").read_text())
    assert saved["totals"]["rejected"] == 2
    text = (tmp_path / "report" / "rejects.csv").read_text()
    rejects = list(csv.DictReader(text.splitlines(keepends=True)))
    assert [(r["file"], r["line"], r["reason"]) for r in rejects] == [
        ("items.csv", "6", "duplicate id 30"),
        ("items.csv", "7", "style 999 too large"),
    ]
    assert rejects[1]["raw"] == '40,999,"big",null\n'


async def test_failed_copy_rolls_back_and_keeps_old_rows(etl_db: str, tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "id,style_id,label\n1,1,x\n")  # note column missing
    conn = await asyncpg.connect(etl_db)
    try:
        await conn.execute(SCHEMA)
        await conn.execute("INSERT INTO items (style_id, label) VALUES (5, 'old')")
        report = LoadReport(tmp_path / "report", "test")
        with pytest.raises(EtlError, match="header lacks column"):
            async with conn.transaction():
                await truncate(conn, ["items"])
                await copy_file(conn, tmp_path, ITEMS, item_converter, None, report)
        assert await conn.fetchval("SELECT label FROM items") == "old"
    finally:
        await conn.close()
