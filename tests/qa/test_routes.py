"""Contract tests for every qa route, against real Postgres and Redis."""

from __future__ import annotations

import re

import pytest

from tests.contract import BAD_ID_VALUES, assert_400_naming, bad_id_queries, bad_paging_queries

from .helpers import (
    PHOTO,
    add_answer,
    add_question,
    answer_body,
    answers,
    question_body,
    questions,
)

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
QUESTION_KEYS = [
    "question_id",
    "question_body",
    "question_date",
    "asker_name",
    "question_helpfulness",
    "reported",
    "answers",
]
EMBEDDED_ANSWER_KEYS = ["id", "body", "date", "answerer_name", "helpfulness", "photos"]
ANSWER_KEYS = ["answer_id", "body", "date", "answerer_name", "helpfulness", "photos"]


# --- GET /qa/questions --------------------------------------------------------------


async def test_questions_shape_types_and_key_order(qa_client, qa_conn):
    q = await add_question(qa_conn, 5, body='Why "cheaper", here?\nReally?', helpful=4)
    a = await add_answer(
        qa_conn, q, body="No markup!", helpful=4, photos=[PHOTO.format(1), PHOTO.format(2)]
    )
    resp = await qa_client.get("/qa/questions?product_id=5")
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.json()
    assert list(body) == ["product_id", "results"]  # no page/count echo
    assert body["product_id"] == "5"
    [question] = body["results"]
    assert list(question) == QUESTION_KEYS
    assert question["question_id"] == q and isinstance(question["question_id"], int)
    assert question["question_body"] == 'Why "cheaper", here?\nReally?'
    assert question["question_date"] == "2020-07-27T21:18:34.409Z"
    assert question["asker_name"] == "asker"
    assert question["question_helpfulness"] == 4
    assert question["reported"] is False
    assert list(question["answers"]) == [str(a)]
    answer = question["answers"][str(a)]
    assert list(answer) == EMBEDDED_ANSWER_KEYS
    assert answer == {
        "id": a,
        "body": "No markup!",
        "date": "2020-09-13T00:53:05.988Z",
        "answerer_name": "answerer",
        "helpfulness": 4,
        "photos": [PHOTO.format(1), PHOTO.format(2)],  # URL strings, in photo id order
    }
    text = await resp.text()
    assert "example.com" not in text and "email" not in text


async def test_question_without_answers_has_empty_object(qa_client, qa_conn):
    q = await add_question(qa_conn, 6)
    [question] = (await questions(qa_client, 6))["results"]
    assert question["question_id"] == q and question["answers"] == {}


async def test_product_without_questions_is_empty_not_404(qa_client):
    resp = await qa_client.get("/qa/questions/?product_id=999")  # trailing slash too
    assert resp.status == 200
    assert await resp.json() == {"product_id": "999", "results": []}


async def test_questions_order_and_all_answers_in_order(qa_client, qa_conn):
    # (helpful) chosen so that id DESC must break ties.
    ids = [await add_question(qa_conn, 7, helpful=h) for h in (1, 3, 1, 0, 3)]
    expected = [
        i for i, h in sorted(zip(ids, (1, 3, 1, 0, 3), strict=True), key=lambda r: (-r[1], -r[0]))
    ]
    # Seven answers on one question: all are embedded whatever the count is.
    helpful = [2, 9, 2, 0, 9, 5, 2]
    answer_ids = [await add_answer(qa_conn, ids[0], helpful=h) for h in helpful]
    answer_order = [
        str(i)
        for i, h in sorted(zip(answer_ids, helpful, strict=True), key=lambda r: (-r[1], -r[0]))
    ]
    body = await questions(qa_client, 7, "&count=10")
    assert [q["question_id"] for q in body["results"]] == expected
    embedded = next(q for q in body["results"] if q["question_id"] == ids[0])["answers"]
    assert list(embedded) == answer_order
    assert [embedded[k]["id"] for k in answer_order] == [int(k) for k in answer_order]


async def test_questions_paging(qa_client, qa_conn):
    ids = [await add_question(qa_conn, 8) for _ in range(5)]
    newest_first = sorted(ids, reverse=True)  # equal helpfulness: id DESC
    assert [q["question_id"] for q in (await questions(qa_client, 8))["results"]] == newest_first
    page2 = await questions(qa_client, 8, "&page=2&count=2")
    assert list(page2) == ["product_id", "results"]
    assert [q["question_id"] for q in page2["results"]] == newest_first[2:4]
    last = await questions(qa_client, 8, "&page=3&count=2")
    assert [q["question_id"] for q in last["results"]] == newest_first[4:]
    assert (await questions(qa_client, 8, "&page=4&count=2"))["results"] == []
    default = await questions(qa_client, 8, "&count=")
    assert len(default["results"]) == 5
    assert len((await questions(qa_client, 8, "&count=1000"))["results"]) == 5


async def test_reported_hidden_at_both_levels(qa_client, qa_conn):
    shown = await add_question(qa_conn, 9)
    await add_question(qa_conn, 9, reported=True, helpful=50)
    kept = await add_answer(qa_conn, shown, helpful=1)
    await add_answer(qa_conn, shown, reported=True, helpful=9)
    [question] = (await questions(qa_client, 9))["results"]
    assert question["question_id"] == shown
    assert list(question["answers"]) == [str(kept)]
    page = await answers(qa_client, shown)
    assert [a["answer_id"] for a in page["results"]] == [kept]


async def test_null_photo_urls(qa_client, qa_conn):
    """A photo with a NULL url (export quirk) is left out of the URL strings
    list, and shown as {id, url: null} on the answers route."""
    q = await add_question(qa_conn, 10)
    a = await add_answer(qa_conn, q, photos=[None, PHOTO.format(3)])
    [question] = (await questions(qa_client, 10))["results"]
    assert question["answers"][str(a)]["photos"] == [PHOTO.format(3)]
    [answer] = (await answers(qa_client, q))["results"]
    assert [p["url"] for p in answer["photos"]] == [None, PHOTO.format(3)]


# --- GET /qa/questions/:id/answers ----------------------------------------------------


async def test_answers_shape_types_and_key_order(qa_client, qa_conn):
    q = await add_question(qa_conn, 11)
    a = await add_answer(
        qa_conn, q, body='Great, "really"', helpful=8, photos=[PHOTO.format(5), PHOTO.format(6)]
    )
    resp = await qa_client.get(f"/qa/questions/{q}/answers")
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.json()
    assert list(body) == ["question", "page", "count", "results"]
    assert body["question"] == str(q) and body["page"] == 0 and body["count"] == 5
    [answer] = body["results"]
    assert list(answer) == ANSWER_KEYS
    photo_ids = [
        r[0]
        for r in await qa_conn.fetch(
            "SELECT id FROM answers_photos WHERE answer_id = $1 ORDER BY id", a
        )
    ]
    assert answer == {
        "answer_id": a,
        "body": 'Great, "really"',
        "date": "2020-09-13T00:53:05.988Z",
        "answerer_name": "answerer",
        "helpfulness": 8,
        "photos": [
            {"id": photo_ids[0], "url": PHOTO.format(5)},
            {"id": photo_ids[1], "url": PHOTO.format(6)},
        ],
    }
    assert all(list(p) == ["id", "url"] for p in answer["photos"])
    assert "example.com" not in await resp.text()


async def test_answers_order_paging_and_echo(qa_client, qa_conn):
    q = await add_question(qa_conn, 12)
    helpful = [1, 4, 1, 0, 4, 2]
    ids = [await add_answer(qa_conn, q, helpful=h) for h in helpful]
    order = [i for i, h in sorted(zip(ids, helpful, strict=True), key=lambda r: (-r[1], -r[0]))]
    everything = await answers(qa_client, q, "count=100")
    assert [a["answer_id"] for a in everything["results"]] == order
    assert everything["count"] == 100 and everything["page"] == 0
    page = await answers(qa_client, q, "page=2&count=4")
    assert page["page"] == 1 and page["count"] == 4
    assert [a["answer_id"] for a in page["results"]] == order[4:]
    far = await answers(qa_client, q, "page=50&count=1000")
    assert far == {"question": str(q), "page": 49, "count": 1000, "results": []}
    slash = await qa_client.get(f"/qa/questions/{q}/answers/?count=1")
    assert [a["answer_id"] for a in (await slash.json())["results"]] == order[:1]


async def test_answers_for_question_without_answers_and_no_photos(qa_client, qa_conn):
    q = await add_question(qa_conn, 13)
    assert await answers(qa_client, q) == {
        "question": str(q),
        "page": 0,
        "count": 5,
        "results": [],
    }
    q2 = await add_question(qa_conn, 13)
    a = await add_answer(qa_conn, q2)
    [answer] = (await answers(qa_client, q2))["results"]
    assert answer["answer_id"] == a and answer["photos"] == []


async def test_answers_for_unknown_question_is_404_and_not_cached(qa_client, qa_conn):
    resp = await qa_client.get("/qa/questions/424242/answers")
    assert resp.status == 404
    assert "question_id" in (await resp.json())["error"]
    await qa_conn.execute(
        "INSERT INTO questions (id, product_id, body, asker_name, asker_email)"
        " VALUES (424242, 1, 'late', 'n', 'e@x.io')"
    )
    assert (await answers(qa_client, 424242))["results"] == []


async def test_reported_question_still_serves_its_answers(qa_client, qa_conn):
    """Reporting hides a question from the product's list; it still exists."""
    q = await add_question(qa_conn, 14, reported=True)
    a = await add_answer(qa_conn, q)
    assert [r["answer_id"] for r in (await answers(qa_client, q))["results"]] == [a]
    assert (await questions(qa_client, 14))["results"] == []


# --- POST -----------------------------------------------------------------------------


async def test_post_question_stores_fields_and_defaults(qa_client, qa_conn):
    resp = await qa_client.post("/qa/questions", json=question_body(20))
    assert resp.status == 201
    row = await qa_conn.fetchrow("SELECT * FROM questions WHERE product_id = 20")
    assert row["body"] == "Does it run small?" and row["asker_name"] == "asker"
    assert row["asker_email"] == "asker@example.com"
    assert row["helpful"] == 0 and row["reported"] is False
    assert await qa_conn.fetchval(
        "SELECT now() - date_written < interval '1 minute' FROM questions WHERE id = $1",
        row["id"],
    )
    [question] = (await questions(qa_client, 20))["results"]
    assert question["question_id"] == row["id"] and question["answers"] == {}
    assert ISO_MS.match(question["question_date"])
    assert (await qa_client.post("/qa/questions/", json=question_body(20))).status == 201


async def test_post_answer_with_photos(qa_client, qa_conn):
    q = await add_question(qa_conn, 21)
    photos = [PHOTO.format(n) for n in range(5)]
    resp = await qa_client.post(f"/qa/questions/{q}/answers", json=answer_body(photos=photos))
    assert resp.status == 201
    row = await qa_conn.fetchrow("SELECT * FROM answers WHERE question_id = $1", q)
    assert row["answerer_email"] == "answerer@example.com" and row["answerer_name"] == "answerer"
    assert row["helpful"] == 0 and row["reported"] is False
    [answer] = (await answers(qa_client, q))["results"]
    assert [p["url"] for p in answer["photos"]] == photos
    [question] = (await questions(qa_client, 21))["results"]
    assert question["answers"][str(row["id"])]["photos"] == photos
    # photos may be absent; trailing slash accepted
    body = answer_body()
    del body["photos"]
    assert (await qa_client.post(f"/qa/questions/{q}/answers/", json=body)).status == 201


async def test_post_answer_to_unknown_question_is_404_and_stores_nothing(qa_client, qa_conn):
    resp = await qa_client.post(
        "/qa/questions/777/answers", json=answer_body(photos=[PHOTO.format(1)])
    )
    assert resp.status == 404
    assert "question_id" in (await resp.json())["error"]
    assert await qa_conn.fetchval("SELECT count(*) FROM answers") == 0
    assert await qa_conn.fetchval("SELECT count(*) FROM answers_photos") == 0


async def test_new_ids_continue_past_existing(qa_client, qa_conn):
    await qa_conn.execute(
        "INSERT INTO questions (id, product_id, body, asker_name, asker_email)"
        " VALUES (5000, 22, 'x', 'n', 'e@x.io')"
    )
    # What the loader does after COPY (tested with the loader too).
    await qa_conn.execute("SELECT setval(pg_get_serial_sequence('questions', 'id'), 5000)")
    assert (await qa_client.post("/qa/questions", json=question_body(22))).status == 201
    assert await qa_conn.fetchval("SELECT max(id) FROM questions") == 5001


async def test_text_is_stored_verbatim(qa_client, qa_conn):
    evil = '\'; DROP TABLE questions; -- <script>x</script> "quoted", ünïcødé\nline'
    assert (await qa_client.post("/qa/questions", json=question_body(23, body=evil))).status == 201
    [question] = (await questions(qa_client, 23))["results"]
    assert question["question_body"] == evil
    resp = await qa_client.post(
        f"/qa/questions/{question['question_id']}/answers", json=answer_body(body=evil)
    )
    assert resp.status == 201
    [answer] = (await answers(qa_client, question["question_id"]))["results"]
    assert answer["body"] == evil


BAD_QUESTION_FIELDS = [
    ("body", {"body": ""}),
    ("body", {"body": "x" * 1001}),
    ("body", {"body": 5}),
    ("body", {"body": "a\u0000b"}),
    ("name", {"name": ""}),
    ("name", {"name": "n" * 61}),
    ("name", {"name": None}),
    ("email", {"email": "not-an-email"}),
    ("email", {"email": "a@b"}),
    ("email", {"email": ("e" * 55) + "@x.com"}),
    ("email", {"email": "a b@x.com"}),
    ("product_id", {"product_id": 0}),
    ("product_id", {"product_id": -1}),
    ("product_id", {"product_id": "5"}),
    ("product_id", {"product_id": 2**31}),
    ("product_id", {"product_id": 1.5}),
]


@pytest.mark.parametrize(("field", "change"), BAD_QUESTION_FIELDS)
async def test_invalid_question_field_is_422_naming_it(qa_client, qa_conn, field, change):
    resp = await qa_client.post("/qa/questions", json={**question_body(30), **change})
    assert resp.status == 422, await resp.text()
    assert field in (await resp.json())["error"]
    assert await qa_conn.fetchval("SELECT count(*) FROM questions") == 0


@pytest.mark.parametrize("field", ["body", "name", "email", "product_id"])
async def test_missing_question_field_is_422_naming_it(qa_client, field):
    body = question_body(31)
    del body[field]
    resp = await qa_client.post("/qa/questions", json=body)
    assert resp.status == 422
    assert field in (await resp.json())["error"]


BAD_ANSWER_FIELDS = [
    ("body", {"body": ""}),
    ("body", {"body": "x" * 1001}),
    ("body", {"body": ["x"]}),
    ("name", {"name": ""}),
    ("name", {"name": "n" * 61}),
    ("email", {"email": "nobody"}),
    ("email", {"email": "x@y@z.com"}),
    ("photos", {"photos": [PHOTO.format(n) for n in range(6)]}),
    ("photos", {"photos": ["ftp://img.example/a.jpg"]}),
    ("photos", {"photos": ["not a url"]}),
    ("photos", {"photos": [5]}),
    ("photos", {"photos": PHOTO.format(1)}),
]


@pytest.mark.parametrize(("field", "change"), BAD_ANSWER_FIELDS)
async def test_invalid_answer_field_is_422_naming_it(qa_client, qa_conn, field, change):
    q = await add_question(qa_conn, 32)
    resp = await qa_client.post(f"/qa/questions/{q}/answers", json={**answer_body(), **change})
    assert resp.status == 422, await resp.text()
    assert field in (await resp.json())["error"]
    assert await qa_conn.fetchval("SELECT count(*) FROM answers") == 0
    assert await qa_conn.fetchval("SELECT count(*) FROM answers_photos") == 0


@pytest.mark.parametrize("field", ["body", "name", "email"])
async def test_missing_answer_field_is_422_naming_it(qa_client, qa_conn, field):
    q = await add_question(qa_conn, 33)
    body = answer_body()
    del body[field]
    resp = await qa_client.post(f"/qa/questions/{q}/answers", json=body)
    assert resp.status == 422
    assert field in (await resp.json())["error"]


@pytest.mark.parametrize("path", ["/qa/questions", "/qa/questions/1/answers"])
@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe{}", b"[1, 2]", b"", b"null"])
async def test_unparseable_body_is_a_json_4xx(qa_client, qa_conn, path, raw):
    await add_question(qa_conn, 34)
    resp = await qa_client.post(path, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status in (400, 422)
    assert "body" in (await resp.json())["error"]


async def test_oversized_body_is_413_json(qa_client):
    resp = await qa_client.post(
        "/qa/questions",
        data=b"{" + b" " * (1024 * 1024 + 10) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 413 and "error" in await resp.json()


# --- PUT ------------------------------------------------------------------------------


async def test_question_helpful_adds_one_and_reorders(qa_client, qa_conn):
    first = await add_question(qa_conn, 40)
    second = await add_question(qa_conn, 40)
    assert [q["question_id"] for q in (await questions(qa_client, 40))["results"]] == [
        second,
        first,
    ]
    resp = await qa_client.put(f"/qa/questions/{first}/helpful")
    assert resp.status == 204 and await resp.read() == b""
    results = (await questions(qa_client, 40))["results"]
    assert [q["question_id"] for q in results] == [first, second]
    assert results[0]["question_helpfulness"] == 1
    assert (await qa_client.put(f"/qa/questions/{first}/helpful/")).status == 204
    assert (await questions(qa_client, 40))["results"][0]["question_helpfulness"] == 2


async def test_question_report_hides_it_and_is_idempotent(qa_client, qa_conn):
    keep = await add_question(qa_conn, 41)
    hide = await add_question(qa_conn, 41)
    resp = await qa_client.put(f"/qa/questions/{hide}/report")
    assert resp.status == 204 and await resp.read() == b""
    assert [q["question_id"] for q in (await questions(qa_client, 41))["results"]] == [keep]
    assert (await qa_client.put(f"/qa/questions/{hide}/report/")).status == 204
    assert await qa_conn.fetchval("SELECT reported FROM questions WHERE id = $1", hide)


async def test_answer_helpful_reorders_both_views(qa_client, qa_conn):
    q = await add_question(qa_conn, 42)
    first = await add_answer(qa_conn, q)
    second = await add_answer(qa_conn, q)
    assert list((await questions(qa_client, 42))["results"][0]["answers"]) == [
        str(second),
        str(first),
    ]
    resp = await qa_client.put(f"/qa/answers/{first}/helpful")
    assert resp.status == 204 and await resp.read() == b""
    embedded = (await questions(qa_client, 42))["results"][0]["answers"]
    assert list(embedded) == [str(first), str(second)]
    assert embedded[str(first)]["helpfulness"] == 1
    page = (await answers(qa_client, q))["results"]
    assert [a["answer_id"] for a in page] == [first, second] and page[0]["helpfulness"] == 1


async def test_answer_report_hides_it_from_both_views(qa_client, qa_conn):
    q = await add_question(qa_conn, 43)
    keep = await add_answer(qa_conn, q)
    hide = await add_answer(qa_conn, q)
    resp = await qa_client.put(f"/qa/answers/{hide}/report/")
    assert resp.status == 204 and await resp.read() == b""
    assert list((await questions(qa_client, 43))["results"][0]["answers"]) == [str(keep)]
    assert [a["answer_id"] for a in (await answers(qa_client, q))["results"]] == [keep]
    assert (await qa_client.put(f"/qa/answers/{hide}/report")).status == 204


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/qa/questions/{}/helpful", "question_id"),
        ("/qa/questions/{}/report", "question_id"),
        ("/qa/answers/{}/helpful", "answer_id"),
        ("/qa/answers/{}/report", "answer_id"),
    ],
)
async def test_put_on_unknown_id_is_404_json(qa_client, path, field):
    for raw in ("99999", "2147483647"):
        resp = await qa_client.put(path.format(raw))
        assert resp.status == 404
        assert field in (await resp.json())["error"]


MALFORMED_IDS = ["abc", "0", "-1", "2147483648", "1.5", "1e3", "%20"]


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("PUT", "/qa/questions/{}/helpful", "question_id"),
        ("PUT", "/qa/questions/{}/report", "question_id"),
        ("PUT", "/qa/answers/{}/helpful", "answer_id"),
        ("PUT", "/qa/answers/{}/report", "answer_id"),
        ("GET", "/qa/questions/{}/answers", "question_id"),
        ("POST", "/qa/questions/{}/answers", "question_id"),
    ],
)
async def test_malformed_path_id_is_400_naming_it(qa_client, method, path, field):
    for raw in MALFORMED_IDS:
        resp = await qa_client.request(method, path.format(raw), json=answer_body())
        assert resp.status == 400, (raw, await resp.text())
        assert field in (await resp.json())["error"]


BAD_QUERIES = [
    *bad_id_queries("/qa/questions", values=("", *BAD_ID_VALUES)),
    *bad_paging_queries("/qa/questions?product_id=1", pages=("0", "x"), counts=("0", "1001")),
    *bad_paging_queries("/qa/questions/1/answers", pages=("-1",), counts=("1001", "five")),
]


@pytest.mark.parametrize(("field", "url"), BAD_QUERIES)
async def test_malformed_query_is_400_naming_the_field(qa_client, field, url):
    await assert_400_naming(qa_client, field, url)


async def test_unknown_route_and_method_are_json(qa_client):
    resp = await qa_client.get("/qa/nope")
    assert resp.status == 404 and "error" in await resp.json()
    resp = await qa_client.delete("/qa/questions")
    assert resp.status == 405 and "error" in await resp.json()


async def test_operational_routes(qa_client):
    assert (await qa_client.get("/healthz")).status == 200
    ready = await qa_client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["database"] == "up"
    await qa_client.get("/qa/questions?product_id=1")
    text = await (await qa_client.get("/metrics")).text()
    assert (
        'runway_http_request_duration_seconds_count{method="GET",route="/qa/questions",'
        'status="200"}' in text
    )
    assert 'runway_service_info{service="qa"}' in text
