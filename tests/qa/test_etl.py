"""The qa generator and loader: each export quirk in a small hand-written
CSV, and a generator -> loader round trip at a tiny scale."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import asyncpg
import pytest

from services.common.data.photo_elements import photo_element
from services.common.data.rebuild import index_names, indexes_file
from services.common.data.values import EtlError
from services.common.resources import CACHE
from services.qa.app import MIGRATIONS
from services.qa.data import generator, loader
from tests.stored_photos import awkward_photos_csv, stored_photos_out_of_step

from .helpers import answers, question_body, questions

Q_HEADER = "id,product_id,body,date_written,asker_name,asker_email,reported,helpful\n"
A_HEADER = "id,question_id,body,date_written,answerer_name,answerer_email,reported,helpful\n"
P_HEADER = "id,answer_id,url\n"


def write_export(directory: Path, questions_csv: str, answers_csv: str, photos_csv: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "questions.csv").write_text(questions_csv)
    (directory / "answers.csv").write_text(answers_csv)
    (directory / "answers_photos.csv").write_text(photos_csv)
    return directory


def read_rejects(report_dir: Path) -> list[dict]:
    with open(report_dir / "rejects.csv", newline="") as f:
        return list(csv.DictReader(f))


async def run_load(dsn: str, data: Path, report: Path, redis_url: str, **kw) -> dict:
    return await loader.load(dsn, data, report, redis_url=redis_url, quiet=True, **kw)


QUIRKY_QUESTIONS = Q_HEADER + textwrap.dedent("""\
    1,5,"What fabric, exactly, is the ""top""?",1595884714409,"yankeelover","y@g.io",0,1
    2,5,"Two lines:
    does it shrink?",1595884714409,"sillyguy","s@gmail.com",1,3
    3,6,"Bad flag",1595884714409,"n","n@x.io",2,0
    3,6,"Duplicate id",1595884714409,"n","n@x.io",0,0
    4,0,"Product zero",1595884714409,"n","n@x.io",0,0
    5,6,"Null asker",1595884714409,null,"n@x.io",0,0
    6,6,"Too few fields",1595884714409
    7,6,"Bad date","yesterday","n","n@x.io",0,0
    8,7,"Quoted null is text","1595884714409","null","n@x.io",0,0
    10,7,"Negative",1595884714409,"n","n@x.io",0,-2
""")
QUIRKY_ANSWERS = A_HEADER + textwrap.dedent('''\
    1,1,"Supposedly suede, but I think its ""synthetic""",1599958385988,"sillyguy","a@b.io",0,1
    2,1,"Reported one",1599958385988,"Seller","a@b.io",1,0
    3,99,"Unknown question",1599958385988,"n","a@b.io",0,0
    4,3,"Question 3 was rejected",1599958385988,"n","a@b.io",0,0
    5,2,"Multi
    line
    answer",1599958385988,"n","a@b.io",0,0
    6,2,"After the multi-line one",1599958385988,"n","a@b.io",true,0
''')
QUIRKY_PHOTOS = P_HEADER + textwrap.dedent("""\
    1,1,"https://images.example/a.jpg"
    2,1,null
    3,1,"null"
    4,3,"https://images.example/orphan.jpg"
    5,77,"https://images.example/unknown.jpg"
    6,5,"https://images.example/c.jpg"
""")


async def test_loader_quirks_and_rejects(tmp_path, qa_client, qa_conn, qa_db, redis_server):
    data = write_export(tmp_path / "data", QUIRKY_QUESTIONS, QUIRKY_ANSWERS, QUIRKY_PHOTOS)
    report = await run_load(
        qa_db, data, tmp_path / "report", redis_server.url, parse_in_child=False
    )
    assert report["status"] == "ok"
    files = report["files"]
    assert files["questions.csv"]["read"] == 10
    assert files["questions.csv"]["loaded"] == 3  # ids 1, 2, 8
    assert files["answers.csv"]["loaded"] == 4  # ids 1, 2, 5, 6
    assert files["answers_photos.csv"]["loaded"] == 4  # ids 1, 2, 3, 6
    assert report["totals"]["rejected"] == 7 + 2 + 2
    reasons = {(r["file"], int(r["line"])): r["reason"] for r in read_rejects(tmp_path / "report")}
    bad_date = reasons.pop(("questions.csv", 10))
    assert "date_written" in bad_date and "yesterday" in bad_date
    # Line numbers count physical lines: question 2 spans lines 3-4.
    assert reasons == {
        ("questions.csv", 5): "reported '2' is not 0/1",
        ("questions.csv", 6): "duplicate id 3",
        ("questions.csv", 7): "product_id 0 not positive",
        ("questions.csv", 8): "asker_name is null",
        ("questions.csv", 9): "expected 8 fields, got 4",
        ("questions.csv", 12): "helpful -2 negative",
        ("answers.csv", 4): "unknown question 99",
        ("answers.csv", 5): "question 3 rejected: reported '2' is not 0/1",
        ("answers_photos.csv", 5): "answer 3 rejected: unknown question 99",
        ("answers_photos.csv", 6): "unknown answer 77",
    }

    rows = {r["id"]: r for r in await qa_conn.fetch("SELECT * FROM questions")}
    assert rows[1]["body"] == 'What fabric, exactly, is the "top"?'
    assert rows[2]["body"] == "Two lines:\ndoes it shrink?" and rows[2]["reported"] is True
    assert rows[8]["asker_name"] == "null"  # quoted: the text, not NULL
    assert rows[1]["helpful"] == 1 and rows[1]["reported"] is False
    assert await qa_conn.fetchval(
        "SELECT date_written = to_timestamp(1595884714.409) FROM questions WHERE id = 1"
    )
    answer_rows = {r["id"]: r for r in await qa_conn.fetch("SELECT * FROM answers")}
    assert answer_rows[5]["body"] == "Multi\nline\nanswer"
    assert answer_rows[6]["reported"] is True  # true/false accepted too
    photo_urls = dict(await qa_conn.fetch("SELECT id, url FROM answers_photos"))
    assert photo_urls == {
        1: "https://images.example/a.jpg",
        2: None,
        3: "null",
        6: "https://images.example/c.jpg",
    }

    # The API over loaded rows: reported answer hidden, NULL url left out of strings.
    [question] = (await questions(qa_client, 5))["results"]
    assert question["question_id"] == 1
    assert question["question_date"] == "2020-07-27T21:18:34.409Z"
    assert list(question["answers"]) == ["1"]
    assert question["answers"]["1"]["photos"] == ["https://images.example/a.jpg", "null"]
    assert [p["url"] for p in (await answers(qa_client, 1))["results"][0]["photos"]] == [
        "https://images.example/a.jpg",
        None,
        "null",
    ]


async def test_loader_reports_rejects_for_rejected_answers_photos(tmp_path, qa_db, redis_server):
    data = write_export(
        tmp_path / "data",
        Q_HEADER + '1,1,"q",1595884714409,"n","n@x.io",0,0\n',
        A_HEADER + '1,1,"a",1599958385988,"n","a@b.io",0,x\n',
        P_HEADER + '1,1,"https://images.example/a.jpg"\n',
    )
    await run_load(qa_db, data, tmp_path / "report", redis_server.url, parse_in_child=False)
    [answer, photo] = read_rejects(tmp_path / "report")
    assert answer["file"] == "answers.csv" and "bad value" in answer["reason"]
    assert photo["reason"].startswith("answer 1 rejected: bad value")
    assert photo["raw"] == '1,1,"https://images.example/a.jpg"\n'


async def test_old_export_dates_and_spaced_headers(tmp_path, qa_conn, qa_db, redis_server):
    data = write_export(
        tmp_path / "data",
        Q_HEADER.replace(",", ", ") + '1, 3, "Old", "2019-01-31", "n", "n@x.io", 0, 0\n',
        A_HEADER.replace(",", ", ") + '1, 1, "Old answer", "2019-02-01", "n", "n@x.io", 0, 2\n',
        P_HEADER,
    )
    report = await run_load(
        qa_db, data, tmp_path / "report", redis_server.url, parse_in_child=False
    )
    assert report["totals"]["loaded"] == 2 and report["totals"]["rejected"] == 0
    assert await qa_conn.fetchval(
        "SELECT date_written = '2019-01-31 00:00:00+00' FROM questions WHERE id = 1"
    )


async def test_load_sequences_indexes_cache_flush_and_rerun(
    tmp_path, qa_client, qa_conn, qa_db, redis_server
):
    # A page cached before the load must not survive it.
    assert (await questions(qa_client, 5))["results"] == []
    data = write_export(tmp_path / "data", QUIRKY_QUESTIONS, QUIRKY_ANSWERS, QUIRKY_PHOTOS)
    first = await run_load(qa_db, data, tmp_path / "report", redis_server.url, parse_in_child=False)
    # The loader's flush reaches running processes within the staleness bound,
    # not at once: wait until this one has applied it (CI caught the race).
    assert await qa_client.server.app[CACHE].drain()
    assert [q["question_id"] for q in (await questions(qa_client, 5))["results"]] == [1]

    # Re-running replaces the data (same counts, no duplicates).
    second = await run_load(
        qa_db, data, tmp_path / "report", redis_server.url, parse_in_child=False
    )
    assert second["totals"] == first["totals"]
    assert await qa_conn.fetchval("SELECT count(*) FROM questions") == 3

    # Every secondary index is back after the load.
    expected = index_names(indexes_file(MIGRATIONS).read_text())
    present = {r[0] for r in await qa_conn.fetch("SELECT indexname FROM pg_indexes")}
    assert len(expected) == 3 and set(expected) <= present

    # Sequences continue past the largest loaded ids.
    assert (await qa_client.post("/qa/questions", json=question_body(5))).status == 201
    assert await qa_conn.fetchval("SELECT max(id) FROM questions") == 9  # loaded: 1, 2, 8
    resp = await qa_client.post(
        "/qa/questions/1/answers",
        json={"body": "b", "name": "n", "email": "n@x.io", "photos": ["https://i.example/x"]},
    )
    assert resp.status == 201
    assert await qa_conn.fetchval("SELECT max(id) FROM answers") == 7
    assert await qa_conn.fetchval("SELECT max(id) FROM answers_photos") == 7


async def test_failed_load_keeps_previous_data(tmp_path, qa_conn, qa_db, redis_server):
    data = write_export(tmp_path / "data", QUIRKY_QUESTIONS, QUIRKY_ANSWERS, QUIRKY_PHOTOS)
    await run_load(qa_db, data, tmp_path / "report", redis_server.url, parse_in_child=False)
    (data / "answers_photos.csv").unlink()
    with pytest.raises(EtlError):
        await run_load(qa_db, data, tmp_path / "report2", redis_server.url, parse_in_child=False)
    assert await qa_conn.fetchval("SELECT count(*) FROM questions") == 3
    failed = json.loads((tmp_path / "report2" / "load-report.json").read_text())
    assert failed["status"] == "failed" and "answers_photos.csv" in failed["error"]


def test_generator_is_deterministic_and_quirky(tmp_path):
    one = generator.generate(tmp_path / "one", scale=0.0003, seed=7)
    two = generator.generate(tmp_path / "two", scale=0.0003, seed=7)
    generator.generate(tmp_path / "other", scale=0.0003, seed=8)
    for name in generator.HEADERS:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
        assert (tmp_path / "one" / name).read_bytes() != (tmp_path / "other" / name).read_bytes()
    assert one["rows"] == two["rows"]
    assert one["rows"]["questions.csv"] == round(3_518_963 * 0.0003)
    assert one["rows"]["answers.csv"] == round(6_879_306 * 0.0003)
    text = (tmp_path / "one" / "questions.csv").read_text()
    assert text.startswith(Q_HEADER)
    assert '""' in text  # doubled quotes inside quoted fields
    with open(tmp_path / "one" / "answers.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert {r[6] for r in rows} <= {"0", "1"}  # 0/1 booleans
    assert all(r[3].isdigit() and len(r[3]) == 13 for r in rows)  # epoch milliseconds
    assert any("," in r[2] for r in rows) and any("\n" in r[2] for r in rows)


async def test_generator_loader_round_trip(tmp_path, qa_client, qa_conn, qa_db, redis_server):
    manifest = generator.generate(tmp_path / "data", scale=0.0005, seed=3)
    report = await run_load(qa_db, tmp_path / "data", tmp_path / "report", redis_server.url)
    assert report["status"] == "ok"
    for name, rows in manifest["rows"].items():
        stats = report["files"][name]
        assert stats["read"] == rows
        assert stats["rejected"] == manifest["expected_rejects"][name]
        assert stats["loaded"] == rows - stats["rejected"]
    assert manifest["expected_rejects"]["answers.csv"] >= 1
    rejected = {
        int(r["raw"].split(",")[0])
        for r in read_rejects(tmp_path / "report")
        if r["file"] == "answers.csv"
    }
    assert rejected == set(manifest["orphan_answer_ids"])
    counts = await qa_conn.fetchrow(
        "SELECT (SELECT count(*) FROM questions) q, (SELECT count(*) FROM answers) a,"
        " (SELECT count(*) FROM answers_photos) p"
    )
    assert tuple(counts) == tuple(report["files"][n]["loaded"] for n in generator.HEADERS)
    assert (
        await qa_conn.fetchval("SELECT count(*) FROM answers_photos WHERE url IS NULL")
        == manifest["null_photo_urls"]
    )

    # Skew: some products have no questions, some many; the busiest serves.
    busiest = await qa_conn.fetchrow(
        "SELECT product_id, count(*) n FROM questions WHERE NOT reported"
        " GROUP BY product_id ORDER BY n DESC LIMIT 1"
    )
    products_with = await qa_conn.fetchval("SELECT count(DISTINCT product_id) FROM questions")
    assert products_with < manifest["products"] * 0.8 and busiest["n"] >= 20
    page = await questions(qa_client, busiest["product_id"], "&count=1000")
    assert len(page["results"]) == busiest["n"]
    helpful = [(q["question_helpfulness"], q["question_id"]) for q in page["results"]]
    assert helpful == sorted(helpful, reverse=True)
    embedded = sum(len(q["answers"]) for q in page["results"])
    assert embedded == await qa_conn.fetchval(
        "SELECT count(*) FROM answers a JOIN questions q ON q.id = a.question_id"
        " WHERE q.product_id = $1 AND NOT q.reported AND NOT a.reported",
        busiest["product_id"],
    )


@pytest.mark.parametrize("missing", ["questions.csv", "answers.csv"])
async def test_bad_header_is_fatal(tmp_path, qa_db, redis_server, missing):
    data = write_export(tmp_path / "data", Q_HEADER, A_HEADER, P_HEADER)
    (data / missing).write_text("id,foo,bar\n1,2,3\n")
    with pytest.raises(EtlError, match=missing):
        await run_load(qa_db, data, tmp_path / "report", redis_server.url, parse_in_child=False)


async def test_db_unchanged_shape(qa_db):
    """The loader targets the migrated schema (guards against drifting column
    lists): every column a row is written with; generated ones are Postgres's."""
    conn = await asyncpg.connect(qa_db)
    try:
        for spec in (loader.QUESTIONS, loader.ANSWERS, loader.PHOTOS):
            cols = [
                r[0]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = $1"
                    " AND is_generated = 'NEVER' ORDER BY ordinal_position",
                    spec.table,
                )
            ]
            assert list(spec.target_columns) == cols
    finally:
        await conn.close()


@pytest.mark.parametrize("parse_in_child", [False, True])
async def test_answers_are_copied_with_their_photos(
    tmp_path, qa_conn, qa_db, redis_server, parse_in_child
):
    """Each answer is written with its photos' elements, read from the photos
    file before the answers: byte for byte what the trigger stores, for urls
    that need every kind of escaping, listed out of id order. The photos'
    rejects are reported once."""
    photos = awkward_photos_csv("answer_id", 1, 5)
    data = write_export(tmp_path / "data", QUIRKY_QUESTIONS, QUIRKY_ANSWERS, photos)
    report = await run_load(
        qa_db, data, tmp_path / "report", redis_server.url, parse_in_child=parse_in_child
    )
    stats = report["files"]["answers_photos.csv"]
    assert (stats["read"], stats["loaded"], stats["rejected"]) == (12, 10, 2)
    assert [r["reason"] for r in read_rejects(tmp_path / "report")][-2:] == [
        "duplicate id 20",
        "bad value: invalid literal for int() with base 10: 'x'",
    ]
    for photo_id, url, element in await qa_conn.fetch(
        "SELECT id, url, element FROM answers_photos"
    ):
        assert photo_element(photo_id, url) == element
    assert await stored_photos_out_of_step(qa_conn, "answers") == []
    stored = dict(await qa_conn.fetch("SELECT id, photo_elements FROM answers ORDER BY id"))
    assert stored[1].count('"url":') == 9 and stored[5].count('"url":') == 1
    assert stored[2] is None and stored[6] is None
