"""Hand-written bad input through the gateway, on top of the generated cases
(test_schemathesis.py): ids, paging, sort, JSON types, missing and extra
fields, invalid UTF-8, a 10 MB body, SQL metacharacters and script tags in
every text field (stored and returned as data, verbatim), and the edges of
email and URL validation. Every refusal is a 4xx with the JSON error body."""

from __future__ import annotations

import json
import time

import asyncpg
import jsonschema
import pytest

from gateway.openapi import OPENAPI_JSON
from tests.gateway.harness import Response, request
from tests.security.conftest import Surface

JSON_HEADERS = {"Content-Type": "application/json"}
BODY = "A review body long enough for the contract's fifty character minimum."
MAX_ID = 2**31 - 1


def call(
    surface: Surface,
    method: str,
    path: str,
    body: object = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    sent = {**(JSON_HEADERS if data is not None else {}), **(headers or {})}
    return request(surface.port, method, path, data, sent, timeout=15)


def assert_error(resp: Response, status: int) -> str:
    assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.header("Content-Type").startswith("application/json")
    body = resp.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    return body["error"]


def unique_product() -> int:
    """A product id no other test writes to (reads back only this test's rows)."""
    return 1_000_000 + time.time_ns() % 1_000_000_000


def review(product_id: int, **fields: object) -> dict:
    return {
        "product_id": product_id,
        "rating": 4,
        "summary": "fine",
        "body": BODY,
        "recommend": True,
        "name": "tester",
        "email": "tester@example.com",
        **fields,
    }


def question(product_id: int, **fields: object) -> dict:
    return {
        "body": "Does it fit?",
        "name": "asker",
        "email": "asker@example.com",
        "product_id": product_id,
        **fields,
    }


def answer(**fields: object) -> dict:
    return {
        "body": "It does.",
        "name": "answerer",
        "email": "answerer@example.com",
        "photos": [],
        **fields,
    }


def new_question(surface: Surface) -> tuple[int, int]:
    """(product id, question id) of a fresh question."""
    product = unique_product()
    assert call(surface, "POST", "/qa/questions", question(product)).status == 201
    listed = call(surface, "GET", f"/qa/questions?product_id={product}").json()
    return product, listed["results"][0]["question_id"]


# --- ids, paging, sort --------------------------------------------------------------------

# A NUL byte (%00) in the path is refused by nginx itself: see
# test_edge.py::test_errors_nginx_raises_while_reading_the_request_line_are_json.
BAD_IDS = [
    "abc",
    "0",
    "-1",
    "1.5",
    "1e3",
    "0x10",
    "%20",
    "+1",
    "01x",
    "2147483648",
    "99999999999999999999",
    "%EF%BC%91",
]  # the last: a fullwidth digit one


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize(
    "service,template",
    [
        ("overview", "/products/{}"),
        ("overview", "/products/{}/styles"),
        ("overview", "/products/{}/related"),
        ("reviews", "/reviews?product_id={}"),
        ("reviews", "/reviews/meta?product_id={}"),
        ("qa", "/qa/questions?product_id={}"),
        ("qa", "/qa/questions/{}/answers"),
    ],
)
def test_malformed_or_huge_ids_are_400(
    surface: Surface, service: str, template: str, bad: str
) -> None:
    surface.require(service)
    assert_error(call(surface, "GET", template.format(bad)), 400)


@pytest.mark.parametrize(
    "service,path",
    [
        ("reviews", "/reviews/{}/helpful"),
        ("reviews", "/reviews/{}/report"),
        ("qa", "/qa/questions/{}/helpful"),
        ("qa", "/qa/answers/{}/report"),
    ],
)
def test_put_ids(surface: Surface, service: str, path: str) -> None:
    surface.require(service)
    for bad in ("abc", "0", "-5", "2147483648", "99999999999999999999"):
        assert_error(call(surface, "PUT", path.format(bad)), 400)
    assert_error(call(surface, "PUT", path.format(MAX_ID)), 404)  # well formed, unknown


@pytest.mark.parametrize(
    "service,path",
    [
        ("overview", "/products?"),
        ("reviews", "/reviews?product_id=1&"),
        ("qa", "/qa/questions?product_id=1&"),
        ("qa", "/qa/questions/{question}/answers?"),
    ],
)
def test_paging_bounds(surface: Surface, service: str, path: str) -> None:
    surface.require(service)
    if "{question}" in path:
        path = path.format(question=new_question(surface)[1])
    for bad in (
        "page=0",
        "page=-1",
        "count=0",
        "count=-5",
        "count=1001",
        "count=99999999999",
        "page=abc",
        "count=1.5",
        "page=1e2",
    ):
        message = assert_error(call(surface, "GET", path + bad), 400)
        assert bad.split("=")[0] in message  # the error names the field
    assert call(surface, "GET", path + "count=1000").status == 200
    assert call(surface, "GET", path + "page=10000000&count=1000").status == 200


def test_unknown_sort_is_400(surface: Surface) -> None:
    surface.require("reviews")
    for sort in ("best", "NEWEST", "newest;drop", "%00"):
        assert "sort" in assert_error(
            call(surface, "GET", f"/reviews?product_id=1&sort={sort}"), 400
        )
    for sort in ("newest", "helpful", "relevant"):
        assert call(surface, "GET", f"/reviews?product_id=1&sort={sort}").status == 200


# --- JSON bodies: types, missing and extra fields ------------------------------------------

WRONG_TYPES = [
    ("rating", "5"),
    ("rating", 4.5),
    ("rating", True),
    ("rating", None),
    ("rating", 0),
    ("rating", 6),
    ("product_id", "1"),
    ("product_id", -1),
    ("product_id", MAX_ID + 1),
    ("recommend", "true"),
    ("recommend", 1),
    ("body", ["x" * 60]),
    ("name", 7),
    ("photos", "https://img.example/1.jpg"),
    ("photos", [1]),
    ("characteristics", []),
    ("characteristics", {"x": 3}),
    ("characteristics", {"1": "3"}),
    ("summary", None),
]


@pytest.mark.parametrize("field,value", WRONG_TYPES)
def test_review_field_of_the_wrong_type_is_422(surface: Surface, field: str, value: object) -> None:
    surface.require("reviews")
    message = assert_error(call(surface, "POST", "/reviews", {**review(1), field: value}), 422)
    assert field in message


@pytest.mark.parametrize("field", ["product_id", "rating", "body", "recommend", "name", "email"])
def test_review_missing_field_is_422_naming_it(surface: Surface, field: str) -> None:
    surface.require("reviews")
    body = review(1)
    del body[field]
    assert field in assert_error(call(surface, "POST", "/reviews", body), 422)


@pytest.mark.parametrize(
    "service,path,body,field",
    [
        ("qa", "/qa/questions", question(1), "body"),
        ("qa", "/qa/questions", question(1), "product_id"),
        ("qa", "/qa/questions", question(1), "email"),
        ("overview", "/interactions", {"element": "a", "widget": "b", "time": "c"}, "widget"),
    ],
)
def test_other_missing_fields_are_422(
    surface: Surface, service: str, path: str, body: dict, field: str
) -> None:
    surface.require(service)
    body = {k: v for k, v in body.items() if k != field}
    assert field in assert_error(call(surface, "POST", path, body), 422)
    assert_error(call(surface, "POST", path, {**body, field: [12345]}), 422)


@pytest.mark.parametrize(
    "service,path",
    [
        ("reviews", "/reviews"),
        ("qa", "/qa/questions"),
        ("overview", "/interactions"),
        ("overview", "/cart"),
    ],
)
@pytest.mark.parametrize("raw", [b"[]", b"null", b"42", b'"text"', b"{", b"{'a': 1}", b"{}"])
def test_body_that_is_not_the_object_asked_for(
    surface: Surface, service: str, path: str, raw: bytes
) -> None:
    surface.require(service)
    resp = call(surface, "POST", path, raw=raw)
    # Malformed JSON is 400, well-formed JSON of the wrong shape 422 (cart: {} has no sku).
    assert_error(resp, 400 if raw in (b"{", b"{'a': 1}") else 422)


def test_extra_fields_are_ignored(surface: Surface) -> None:
    surface.require("reviews")
    product = unique_product()
    body = review(
        product,
        summary="extra",
        review_id=MAX_ID,
        helpfulness=99,
        reported=True,
        reviewer_email="x@example.com",
        unknown={"nested": [1]},
    )
    assert call(surface, "POST", "/reviews", body).status == 201
    (stored,) = call(surface, "GET", f"/reviews?product_id={product}").json()["results"]
    assert stored["helpfulness"] == 0 and stored["review_id"] != MAX_ID
    assert "reviewer_email" not in stored and "unknown" not in stored


def test_document_allows_the_extra_fields_services_accept(surface: Surface) -> None:
    surface.require("reviews")
    test_extra_fields_are_ignored(surface)
    schemas = json.loads(OPENAPI_JSON.read_text())["components"]["schemas"]
    closed = [
        n
        for n in ("NewReview", "NewQuestion", "NewAnswer", "Interaction", "NewCartItem")
        if schemas[n].get("additionalProperties") is False
    ]
    assert closed == []


def empty_value_answers(surface: Surface) -> list[int]:
    paths = [
        "/products?page=&count=",
        "/reviews?product_id=1&sort=&page=&count=",
        "/qa/questions?product_id=1&page=&count=",
    ]
    return [call(surface, "GET", path).status for path in paths]


def test_empty_paging_and_sort_mean_the_default(surface: Surface) -> None:
    for service in ("overview", "reviews", "qa"):
        surface.require(service)
    assert empty_value_answers(surface) == [200, 200, 200]


def test_document_allows_the_empty_values_services_accept(surface: Surface) -> None:
    test_empty_paging_and_sort_mean_the_default(surface)
    refused = []
    sku = {"X-Session-Id": f"empty-{time.time_ns()}"}
    assert call(surface, "POST", "/cart?sku_id=", {"sku_id": 1}, headers=sku).status == 201
    for path, item in json.loads(OPENAPI_JSON.read_text())["paths"].items():
        params = item.get("get", {}).get("parameters", []) + item.get("post", {}).get(
            "parameters", []
        )
        for param in params:
            if param["in"] == "query" and param["name"] in ("page", "count", "sort", "sku_id"):
                try:
                    jsonschema.validate("", param["schema"])
                except jsonschema.ValidationError:
                    refused.append(f"{path} {param['name']}")
    assert refused == []


@pytest.mark.parametrize(
    "service,method,path,raw,headers",
    [
        ("reviews", "POST", "/reviews", b"{", None),
        ("qa", "POST", "/qa/questions", b"{", None),
        ("overview", "POST", "/interactions", b"{", None),
        ("overview", "GET", "/cart", None, {"X-Session-Id": "bad session"}),
    ],
)
def test_document_lists_the_400_services_send(
    surface: Surface, service: str, method: str, path: str, raw: bytes | None, headers
) -> None:
    surface.require(service)
    assert_error(call(surface, method, path, raw=raw, headers=headers), 400)
    responses = json.loads(OPENAPI_JSON.read_text())["paths"][path][method.lower()]["responses"]
    assert "400" in responses


# --- encodings and sizes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "service,path",
    [("reviews", "/reviews"), ("qa", "/qa/questions"), ("overview", "/interactions")],
)
def test_invalid_utf8_body_is_a_client_error(surface: Surface, service: str, path: str) -> None:
    surface.require(service)
    raw = b'{"body": "\xff\xfe\xc3\x28 invalid", "name": "\xed\xa0\x80", "element": "\x80"}'
    status = call(surface, "POST", path, raw=raw).status
    assert status in (400, 422)
    assert_error(call(surface, "POST", path, raw=raw), status)


@pytest.mark.parametrize(
    "service,path",
    [
        ("reviews", "/reviews?product_id=%ff%fe"),
        ("qa", "/qa/questions?product_id=%c3%28"),
        ("overview", "/products/%ff"),
        ("reviews", "/reviews?product_id=1&sort=%ff"),
    ],
)
def test_invalid_utf8_in_the_url_is_a_client_error(
    surface: Surface, service: str, path: str
) -> None:
    surface.require(service)
    resp = call(surface, "GET", path)
    assert 400 <= resp.status < 500
    assert_error(resp, resp.status)


def test_a_10_mb_body_is_refused_by_the_gateway(surface: Surface) -> None:
    resp = call(surface, "POST", "/reviews", raw=b'{"body": "' + b"x" * (10 * 1024 * 1024) + b'"}')
    assert "1 MiB" in assert_error(resp, 413)


# --- hostile text is data -------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE reviews; --",
    '" OR 1=1 --',
    "<script>alert('x')</script>",
    "1'; SELECT pg_sleep(5); --",
    "\\'; $1 %s {0} `rm -rf` \\x00?",
    '</script><img src=x onerror="alert(1)">',
    "Ünïcödé 漢字 🙂 \u202e",
]


def hostile(text: str, limit: int) -> str:
    """The payload cut to a field's limit (the contract's lengths are in characters)."""
    return text[:limit]


@pytest.mark.parametrize("payload", HOSTILE)
def test_review_text_is_stored_and_returned_verbatim(surface: Surface, payload: str) -> None:
    surface.require("reviews")
    product = unique_product()
    photo = "https://img.example/p.jpg?q=" + payload.replace(" ", "%20")
    body = review(
        product,
        summary=hostile(payload, 60),
        body=(payload + " " + BODY)[:1000],
        name=hostile(payload, 60),
        photos=[photo],
    )
    assert call(surface, "POST", "/reviews", body).status == 201
    resp = call(surface, "GET", f"/reviews?product_id={product}")
    assert resp.header("Content-Type").startswith("application/json")
    (stored,) = resp.json()["results"]
    assert stored["summary"] == body["summary"]
    assert stored["body"] == body["body"]
    assert stored["reviewer_name"] == body["name"]
    assert [p["url"] for p in stored["photos"]] == [photo]
    meta = call(surface, "GET", f"/reviews/meta?product_id={product}").json()
    assert sum(int(n) for n in meta["ratings"].values()) == 1  # the table is still there


@pytest.mark.parametrize("payload", HOSTILE)
def test_qa_text_is_stored_and_returned_verbatim(surface: Surface, payload: str) -> None:
    surface.require("qa")
    product = unique_product()
    asked = question(product, body=payload, name=hostile(payload, 60))
    assert call(surface, "POST", "/qa/questions", asked).status == 201
    (stored,) = call(surface, "GET", f"/qa/questions?product_id={product}").json()["results"]
    assert (stored["question_body"], stored["asker_name"]) == (payload, asked["name"])
    photo = "https://img.example/a.jpg#" + payload.replace(" ", "%20")
    given = answer(body=payload, name=hostile(payload, 60), photos=[photo])
    qid = stored["question_id"]
    assert call(surface, "POST", f"/qa/questions/{qid}/answers", given).status == 201
    (listed,) = call(surface, "GET", f"/qa/questions/{qid}/answers").json()["results"]
    assert (listed["body"], listed["answerer_name"]) == (payload, given["name"])
    assert [p["url"] for p in listed["photos"]] == [photo]
    (embedded,) = call(surface, "GET", f"/qa/questions?product_id={product}").json()["results"]
    (inner,) = embedded["answers"].values()
    assert (inner["body"], inner["photos"]) == (payload, [photo])


@pytest.mark.parametrize("payload", HOSTILE)
async def test_interaction_text_is_stored_verbatim(surface: Surface, payload: str) -> None:
    surface.require("overview")
    event = {"element": payload + "-el", "widget": payload, "time": payload[::-1]}
    assert call(surface, "POST", "/interactions", event).status == 201
    conn = await asyncpg.connect(surface.dsn("overview"))
    try:
        row = await conn.fetchrow(
            "SELECT element, widget, time FROM interactions WHERE element = $1", event["element"]
        )
    finally:
        await conn.close()
    assert dict(row) == event


def test_nul_characters_are_refused_not_a_500(surface: Surface) -> None:
    surface.require("reviews")
    # Postgres text cannot hold NUL: the services refuse it as input (422).
    assert_error(call(surface, "POST", "/reviews", review(1, summary="a\u0000b")), 422)


# --- email and URL edges -------------------------------------------------------------------

GOOD_EMAILS = [
    "a@b.co",
    "first.last+tag@sub.example.org",
    "o'brien@example.ie",
    ("x" * 48) + "@example.com",
]  # exactly 60 characters
BAD_EMAILS = [
    "",
    "plainaddress",
    "@example.com",
    "a@",
    "a@b",
    "a b@example.com",
    "a@@example.com",
    "a@example..com",
    "a@.example.com",
    ("x" * 49) + "@example.com",
    "a@exa mple.com",
    "a\u0000@example.com",
]


@pytest.mark.parametrize("email", GOOD_EMAILS)
def test_plausible_emails_are_accepted(surface: Surface, email: str) -> None:
    surface.require("reviews")
    assert call(surface, "POST", "/reviews", review(unique_product(), email=email)).status == 201


@pytest.mark.parametrize("email", BAD_EMAILS)
@pytest.mark.parametrize("service", ["reviews", "qa"])
def test_implausible_emails_are_422(surface: Surface, service: str, email: str) -> None:
    surface.require(service)
    if service == "reviews":
        resp = call(surface, "POST", "/reviews", review(1, email=email))
    else:
        resp = call(surface, "POST", "/qa/questions", question(1, email=email))
    assert "email" in assert_error(resp, 422)


GOOD_URLS = [
    "http://x",
    "https://img.example/a.jpg",
    "https://img.example/a?b=c&d=%20#f",
    "https://" + "a" * 2000 + ".example/",
]
BAD_URLS = [
    "",
    "ftp://img.example/a.jpg",
    "javascript:alert(1)",
    "//img.example/a.jpg",
    "https://",
    "https:// img.example",
    "data:image/png;base64,AAAA",
    "img.example/a.jpg",
    "HTTPS://img.example",
    "https://img.example/" + "a" * 2048,
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_http_urls_are_accepted(surface: Surface, url: str) -> None:
    surface.require("reviews")
    product = unique_product()
    assert call(surface, "POST", "/reviews", review(product, photos=[url])).status == 201
    (stored,) = call(surface, "GET", f"/reviews?product_id={product}").json()["results"]
    assert [p["url"] for p in stored["photos"]] == [url]


@pytest.mark.parametrize("url", BAD_URLS)
def test_other_urls_are_422(surface: Surface, url: str) -> None:
    surface.require("reviews")
    assert "photos" in assert_error(call(surface, "POST", "/reviews", review(1, photos=[url])), 422)


def test_photo_count_and_text_lengths(surface: Surface) -> None:
    surface.require("reviews")
    six = [f"https://img.example/{i}.jpg" for i in range(6)]
    for field, value in [
        ("photos", six),
        ("summary", "s" * 61),
        ("body", "b" * 49),
        ("body", "b" * 1001),
        ("name", ""),
        ("name", "n" * 61),
    ]:
        assert field in assert_error(
            call(surface, "POST", "/reviews", review(1, **{field: value})), 422
        )
    # Lengths are characters, not bytes: 60 two-byte characters fit a 60 limit.
    ok = review(unique_product(), summary="é" * 60, name="漢" * 60, body="ü" * 50)
    assert call(surface, "POST", "/reviews", ok).status == 201
