"""The OpenAPI document: generated from gateway/openapi.py, well formed, the
contract's details, the same route table the services serve, and real
responses of every route validated against it.

Coverage is explicit: the overview catalogue's 200 answers need catalogue
data, which only the demo dataset provides, so they are validated in
tests/e2e/test_stack.py (listed in E2E_ONLY below), never silently."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import asyncpg
import jsonschema
import pytest

from gateway import openapi
from services.common import settings as cfg
from services.overview import app as overview_app
from services.qa import app as qa_app
from services.reviews import app as reviews_app
from tests import conftest as root_conftest
from tests.conftest import RedisServer, settings_for
from tests.contract import REVIEW_KEYS
from tests.gateway.openapi_check import Recorder, document, operations

JSON = {"Content-Type": "application/json"}
OPERATIONAL = {"/healthz", "/readyz", "/metrics"}
E2E_ONLY = {
    ("GET", "/products/{product_id}"),
    ("GET", "/products/{product_id}/styles"),
    ("GET", "/products/{product_id}/related"),
    ("POST", "/cart"),
}


APP_MODULES = {"overview": overview_app, "reviews": reviews_app, "qa": qa_app}


def service_app_module(service: str):
    return APP_MODULES[service]


# --- the document itself ----------------------------------------------------------------


def test_checked_in_document_is_the_generated_one() -> None:
    assert openapi.OPENAPI_JSON.read_text() == openapi.dumps(), (
        "gateway/openapi.json is stale: run `python -m gateway.openapi`"
    )


def test_document_is_well_formed() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    ids = [
        op["operationId"]
        for item in doc["paths"].values()
        for m, op in item.items()
        if m in ("get", "put", "post")
    ]
    assert len(ids) == len(set(ids))
    assert len(operations()) == len(ids)
    # Every reference resolves inside the document.
    refs = re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(doc))
    for ref in refs:
        node = doc
        for part in ref.split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]


def test_contract_details_are_in_the_document() -> None:
    schemas = document()["components"]["schemas"]
    style = schemas["Style"]["properties"]
    assert style["default?"] == {"type": "boolean"}
    assert {"type": "null"} in style["sale_price"]["anyOf"]
    assert list(schemas["Review"]["properties"]) == REVIEW_KEYS
    meta = schemas["ReviewMeta"]["properties"]
    assert meta["ratings"]["additionalProperties"]["type"] == "string"
    assert schemas["ReviewList"]["properties"]["product"]["type"] == "string"
    assert schemas["Error"]["required"] == ["error"]
    put = document()["paths"]["/reviews/{review_id}/helpful"]["put"]["responses"]
    assert "content" not in put["204"]
    for status in ("413", "429", "502", "503", "504"):
        assert status in put


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_document_and_service_route_tables_agree(service: str, redis_server: RedisServer) -> None:
    module = service_app_module(service)
    app = module.create_app(settings_for(service, "postgresql://unused/x", redis_server.url))
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical
        # "*" is the catch-all that answers 404/405 where no route matches.
        if path in OPERATIONAL or route.method in ("HEAD", "*"):
            continue
        bare = path.rstrip("/") or "/"
        served.add((route.method, re.sub(r"\{[^}]+\}", "{}", bare)))
    documented = {(m, re.sub(r"\{[^}]+\}", "{}", p)) for m, p in operations(service)}
    assert served == documented


# --- real responses --------------------------------------------------------------------------


async def fresh_database(service: str) -> str:
    """A migrated, empty database of this module's own (the services' test
    databases belong to their own suites)."""
    from services.common.db import drop_database, prepare_database

    url = root_conftest.test_database_url(service) + "_openapi"
    await drop_database(url)
    await prepare_database(url, service_app_module(service).MIGRATIONS)
    return url


@pytest.fixture
async def client_for(aiohttp_client, redis_server: RedisServer) -> Iterator:
    made: list[str] = []

    async def factory(service: str):
        module = service_app_module(service)
        url = await fresh_database(service)
        made.append(url)
        redis_server.flush()
        app = module.create_app(settings_for(service, url, redis_server.url))
        return await aiohttp_client(app), url

    yield factory
    from services.common.db import drop_database

    for url in made:
        await drop_database(url)


class Driver:
    """Sends a request, validates the answer against the document, returns it."""

    def __init__(self, client, recorder: Recorder) -> None:
        self.client = client
        self.recorder = recorder

    async def __call__(self, method: str, path: str, status: int, **kwargs) -> bytes:
        resp = await self.client.request(method, path, **kwargs)
        body = await resp.read()
        assert resp.status == status, (method, path, resp.status, body[:300])
        self.recorder.check(method, path, resp.status, resp.headers.get("Content-Type", ""), body)
        return body


async def test_reviews_responses_match_the_document(client_for) -> None:
    client, url = await client_for("reviews")
    conn = await asyncpg.connect(url)
    try:
        size = await conn.fetchval(
            "INSERT INTO characteristics (product_id, name) VALUES (40, 'Size') RETURNING id"
        )
        await conn.execute("INSERT INTO characteristics (product_id, name) VALUES (40, 'Fit')")
    finally:
        await conn.close()
    rec = Recorder()
    call = Driver(client, rec)
    review = {
        "product_id": 40,
        "rating": 4,
        "summary": "Good",
        "recommend": True,
        "body": "A body that is comfortably longer than the fifty character minimum.",
        "name": "oa",
        "email": "oa@example.com",
        "photos": ["https://img.example/1.jpg"],
        "characteristics": {str(size): 3},
    }
    await call("POST", "/reviews", 201, json=review)
    await call("POST", "/reviews/", 201, json={**review, "photos": [], "characteristics": {}})
    for sort in ("newest", "helpful", "relevant"):
        await call("GET", f"/reviews/?product_id=40&sort={sort}&count=10", 200)
    listed = json.loads(await call("GET", "/reviews?product_id=40", 200))
    review_id = listed["results"][0]["review_id"]
    await call("GET", "/reviews?product_id=41", 200)  # no reviews
    await call("GET", "/reviews/meta?product_id=40", 200)
    await call("GET", "/reviews/meta?product_id=41", 200)
    await call("PUT", f"/reviews/{review_id}/helpful", 204)
    await call("PUT", f"/reviews/{review_id}/report", 204)
    # Errors, in the contract's shape.
    await call("GET", "/reviews?product_id=abc", 400)
    await call("GET", "/reviews?product_id=40&sort=best", 400)
    await call("GET", "/reviews?product_id=40&count=1001", 400)
    await call("GET", "/reviews/meta", 400)
    await call("PUT", "/reviews/2147483000/helpful", 404)
    await call("PUT", "/reviews/0/report", 400)
    await call("POST", "/reviews", 422, json={**review, "rating": 6})
    await call("POST", "/reviews", 413, data=b"x" * (1024 * 1024 + 10), headers=JSON)
    assert rec.missing_successes("reviews") == []


async def test_qa_responses_match_the_document(client_for) -> None:
    client, _ = await client_for("qa")
    rec = Recorder()
    call = Driver(client, rec)
    person = {"name": "asker", "email": "asker@example.com"}
    await call(
        "POST", "/qa/questions", 201, json={"body": "Does it run small?", "product_id": 5, **person}
    )
    questions = json.loads(await call("GET", "/qa/questions?product_id=5", 200))
    question_id = questions["results"][0]["question_id"]
    answer = {"body": "It runs true to size.", **person, "photos": ["https://img.example/a.jpg"]}
    await call("POST", f"/qa/questions/{question_id}/answers", 201, json=answer)
    await call("POST", f"/qa/questions/{question_id}/answers", 201, json={**answer, "photos": []})
    await call("GET", "/qa/questions?product_id=5&count=100", 200)
    await call("GET", "/qa/questions?product_id=6", 200)
    answers = json.loads(await call("GET", f"/qa/questions/{question_id}/answers", 200))
    answer_id = answers["results"][0]["answer_id"]
    await call("PUT", f"/qa/questions/{question_id}/helpful", 204)
    await call("PUT", f"/qa/answers/{answer_id}/helpful", 204)
    await call("PUT", f"/qa/answers/{answer_id}/report", 204)
    await call("PUT", f"/qa/questions/{question_id}/report", 204)
    await call("GET", "/qa/questions?product_id=x", 400)
    await call("GET", "/qa/questions/2147483000/answers", 404)
    await call("POST", "/qa/questions/2147483000/answers", 404, json=answer)
    await call("POST", "/qa/questions", 422, json={"body": "", "product_id": 5, **person})
    await call("PUT", "/qa/answers/2147483000/helpful", 404)
    await call("PUT", "/qa/questions/2147483000/report", 404)
    assert rec.missing_successes("qa") == []


async def test_overview_responses_match_the_document(client_for) -> None:
    client, _ = await client_for("overview")
    rec = Recorder()
    call = Driver(client, rec)
    await call("GET", "/products", 200)
    await call("GET", "/products?page=1&count=5", 200)
    await call("GET", "/products/1", 404)
    await call("GET", "/products/1/styles", 404)
    await call("GET", "/products/1/related", 404)
    await call("GET", "/products/abc", 400)
    await call("GET", "/products?count=1001", 400)
    await call("GET", "/cart", 200, headers={"X-Session-Id": "openapi"})
    await call("POST", "/cart", 404, json={"sku_id": 2147483000}, headers={"X-Session-Id": "oa"})
    event = {"element": "button", "widget": "overview", "time": "2024-01-01T00:00:00Z"}
    await call("POST", "/interactions", 201, json=event)
    await call("POST", "/interactions", 422, json={"element": "button"})
    # The catalogue's 200s need catalogue data: tests/e2e validates them.
    assert rec.missing_successes("overview", exempt=E2E_ONLY) == []
