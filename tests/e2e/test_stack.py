"""End to end through the gateway of the whole stack (tests/e2e/conftest.py):
every route, each answer validated against the OpenAPI document; a write read
back through another instance; the gateway's own 404 and 413; a killed
instance the gateway routes around and supervisord restarts; Prometheus
scraping every instance; and, last, the rate limit's 429."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.parse
import urllib.request

import aiohttp
import asyncpg
import pytest

from services.common import settings as cfg
from tests.conftest import PG_ADMIN_URL, POOLER_ENABLED
from tests.e2e.conftest import INSTANCES, Stack, e2e_database_url
from tests.gateway.harness import request
from tests.gateway.openapi_check import Recorder

JSON = {"Content-Type": "application/json"}
REVIEW_BODY = "An end-to-end review, long enough for the contract's fifty characters."


class Client:
    """Requests through the gateway, each answer validated against the document."""

    def __init__(self, port: int, recorder: Recorder) -> None:
        self.port = port
        self.recorder = recorder

    def __call__(self, method: str, path: str, status: int, body: object = None, **headers):
        data = None if body is None else json.dumps(body).encode()
        resp = request(self.port, method, path, data, {**(JSON if data else {}), **headers})
        assert resp.status == status, (method, path, resp.status, resp.body[:300])
        assert resp.header("X-Request-Id")
        self.recorder.check(method, path, resp.status, resp.header("Content-Type") or "", resp.body)
        is_json = (resp.header("Content-Type") or "").startswith("application/json")
        return resp.json() if resp.body and is_json else None


def first_with(port: int, path: str, key: str, limit: int = 60) -> tuple[int, dict]:
    """The first product id (1..limit) whose answer at `path` has a non-empty `key`."""
    for product_id in range(1, limit + 1):
        body = request(port, "GET", path.format(product_id)).json()
        if body[key]:
            return product_id, body
    pytest.fail(f"no product in 1..{limit} has {key} at {path}: is the demo data loaded?")


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


def test_overview_routes(stack: Stack, recorder: Recorder) -> None:
    call = Client(stack.gateway, recorder)
    products = call("GET", "/products?page=1&count=5", 200)
    assert [p["id"] for p in products] == sorted(p["id"] for p in products)
    product_id = products[0]["id"]
    detail = call("GET", f"/products/{product_id}", 200)
    assert detail["id"] == product_id
    styles = call("GET", f"/products/{product_id}/styles", 200)
    assert styles["product_id"] == str(product_id)
    call("GET", f"/products/{product_id}/related", 200)
    call("GET", "/products/2147483000", 404)
    call("GET", "/products/abc/styles", 400)
    sku = next(
        int(k)
        for s in styles["results"]
        for k, v in s["skus"].items()
        if k != "null" and v["quantity"]
    )
    session = {"X-Session-Id": f"e2e-{time.time_ns()}"}
    call("POST", "/cart", 201, {"sku_id": sku}, **session)
    cart = call("GET", "/cart", 200, **session)
    assert cart == [{"sku_id": sku, "count": 1}]
    call("POST", "/interactions", 201, {"element": "a", "widget": "b", "time": "c"})
    call("POST", "/interactions", 422, {"element": "a"})


def test_reviews_routes(stack: Stack, recorder: Recorder) -> None:
    call = Client(stack.gateway, recorder)
    product_id, listed = first_with(stack.gateway, "/reviews/?product_id={}&count=100", "results")
    for sort in ("newest", "helpful", "relevant"):
        call("GET", f"/reviews/?product_id={product_id}&sort={sort}", 200)
    meta = call("GET", f"/reviews/meta?product_id={product_id}", 200)
    assert meta["ratings"]
    review_id = listed["results"][0]["review_id"]
    call("PUT", f"/reviews/{review_id}/helpful", 204)
    call("PUT", f"/reviews/{review_id}/report", 204)
    after = call("GET", f"/reviews/?product_id={product_id}&count=100", 200)
    assert review_id not in [r["review_id"] for r in after["results"]]
    review = {
        "product_id": product_id,
        "rating": 5,
        "summary": "e2e",
        "body": REVIEW_BODY,
        "recommend": True,
        "name": "e2e",
        "email": "e2e@example.com",
        "photos": ["https://img.example/r.jpg"],
        "characteristics": {},
    }
    call("POST", "/reviews", 201, review)
    call("POST", "/reviews", 422, {**review, "rating": 0})
    call("GET", "/reviews?product_id=0", 400)
    call("PUT", "/reviews/2147483000/helpful", 404)


def test_qa_routes(stack: Stack, recorder: Recorder) -> None:
    call = Client(stack.gateway, recorder)
    product_id, _ = first_with(stack.gateway, "/qa/questions?product_id={}&count=100", "results")
    person = {"name": "e2e", "email": "e2e@example.com"}
    call("POST", "/qa/questions", 201, {"body": "Is it warm?", "product_id": product_id, **person})
    questions = call("GET", f"/qa/questions?product_id={product_id}&count=100", 200)
    question_id = next(
        q["question_id"] for q in questions["results"] if q["question_body"] == "Is it warm?"
    )
    answer = {"body": "Very.", **person, "photos": ["https://img.example/e2e.jpg"]}
    call("POST", f"/qa/questions/{question_id}/answers", 201, answer)
    answers = call("GET", f"/qa/questions/{question_id}/answers", 200)
    answer_id = answers["results"][0]["answer_id"]
    call("PUT", f"/qa/questions/{question_id}/helpful", 204)
    call("PUT", f"/qa/answers/{answer_id}/helpful", 204)
    call("PUT", f"/qa/answers/{answer_id}/report", 204)
    call("PUT", f"/qa/questions/{question_id}/report", 204)
    call("GET", "/qa/questions/2147483000/answers", 404)


def test_every_route_was_validated(stack: Stack, recorder: Recorder) -> None:
    for service in cfg.SERVICES:
        assert recorder.missing_successes(service) == [], service


@pytest.mark.parametrize("service", ["reviews", "qa"])
def test_a_write_is_read_back_through_every_instance(stack: Stack, service: str) -> None:
    marker = f"e2e-{service}-{time.time_ns()}"
    if service == "reviews":
        body = {
            "product_id": 999_999,
            "rating": 3,
            "summary": marker,
            "body": REVIEW_BODY,
            "recommend": False,
            "name": "e2e",
            "email": "e2e@example.com",
        }
        resp = request(stack.gateway, "POST", "/reviews", json.dumps(body).encode(), JSON)
        path, key = "/reviews?product_id=999999", "summary"
    else:
        body = {"body": marker, "name": "e2e", "email": "e2e@example.com", "product_id": 999_999}
        resp = request(stack.gateway, "POST", "/qa/questions", json.dumps(body).encode(), JSON)
        path, key = "/qa/questions?product_id=999999", "question_body"
    assert resp.status == 201
    ports = stack.instance_ports(service)
    assert len(ports) == INSTANCES
    for port in ports:  # straight to each instance: the other one did not take the write
        results = request(port, "GET", path).json()["results"]
        assert marker in [r[key] for r in results], port


@pytest.mark.skipif(not POOLER_ENABLED, reason="RUNWAY_TEST_POOLER=1 only")
def test_behind_the_pooler_the_services_connect_as_their_app_role(stack: Stack) -> None:
    """PG_POOLER=1: every instance reaches Postgres through PgBouncer as
    runway_<service> with DB_POOLER=transaction (and the routes above passed)."""
    conf = (stack.run_dir / "supervisord.conf").read_text()
    assert (
        "[program:pgbouncer]" in conf
        and conf.count('DB_POOLER="transaction"') == len(cfg.SERVICES) * INSTANCES
    )

    async def users() -> set[tuple[str, str]]:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            rows = await conn.fetch(
                "SELECT DISTINCT datname, usename FROM pg_stat_activity"
                " WHERE application_name LIKE 'runway-%'"
            )
            return {(r[0], r[1]) for r in rows}
        finally:
            await conn.close()

    seen = asyncio.run(users())
    for service in cfg.SERVICES:
        assert (e2e_database_url(service).rsplit("/", 1)[1], f"runway_{service}") in seen


def test_gateway_errors(stack: Stack) -> None:
    for path in ("/nope", "/metrics", "/healthz", "/readyz", "/reviews/%2e%2e/metrics"):
        resp = request(stack.gateway, "GET", path)
        assert resp.status == 404 and list(resp.json()) == ["error"], path
    resp = request(stack.gateway, "POST", "/reviews", b"x" * (1024 * 1024 + 1), JSON)
    assert resp.status == 413 and list(resp.json()) == ["error"]
    resp = request(stack.gateway, "GET", "/openapi.json", headers={"X-Request-Id": "e2e-1"})
    assert resp.status == 200 and resp.header("X-Request-Id") == "e2e-1"
    assert resp.json()["openapi"] == "3.1.0"
    assert resp.header("Server") == "nginx"


def test_a_killed_instance_is_routed_around_and_restarted(stack: Stack) -> None:
    name = "reviews-1"
    old_pid = int(stack.supervisorctl("pid", name).stdout.strip())
    assert old_pid > 0
    os.kill(old_pid, signal.SIGKILL)
    statuses = [
        request(stack.gateway, "GET", f"/reviews?product_id={i}").status for i in range(1, 61)
    ]
    assert statuses == [200] * 60
    port = stack.instance_ports("reviews")[1]
    deadline = time.monotonic() + 30
    ready = False
    while not ready and time.monotonic() < deadline:
        try:
            ready = request(port, "GET", "/readyz", timeout=1).status == 200
        except OSError:
            time.sleep(0.2)
    assert ready, "supervisord did not restart the killed instance"
    assert int(stack.supervisorctl("pid", name).stdout.strip()) != old_pid


def test_prometheus_scrapes_every_instance(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.env['PROMETHEUS_PORT']}/api/v1/targets"
    want = {f"127.0.0.1:{p}" for s in cfg.SERVICES for p in stack.instance_ports(s)}
    deadline = time.monotonic() + 30
    up: set[str] = set()
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=2) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
        up = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
        if want <= up:
            return
        time.sleep(1)
    pytest.fail(f"not scraped: {sorted(want - up)}")


def test_prometheus_scrapes_the_exporters(stack: Stack) -> None:
    """Jobs nginx, redis and postgres up, each exporter reading its target
    (nginx_up, redis_up, pg_up are 1, not only the exporter answering)."""
    base = f"http://127.0.0.1:{stack.env['PROMETHEUS_PORT']}/api/v1"
    deadline = time.monotonic() + 40
    health: dict[str, str] = {}
    values: dict[str, str] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/targets", timeout=2) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        query = urllib.parse.quote("nginx_up or redis_up or pg_up")
        with urllib.request.urlopen(f"{base}/query?query={query}", timeout=2) as resp:
            result = json.load(resp)["data"]["result"]
        values = {r["metric"]["__name__"]: r["value"][1] for r in result}
        if all(health.get(j) == "up" for j in ("nginx", "redis", "postgres")) and values == {
            "nginx_up": "1",
            "redis_up": "1",
            "pg_up": "1",
        }:
            return
        time.sleep(1)
    pytest.fail(f"exporter targets {health}, up series {values}")


def test_service_processes_freeze_their_start_up_objects(stack: Stack) -> None:
    # What keeps full collections short: without it they walked every import.
    for service in cfg.SERVICES:
        for port in stack.instance_ports(service):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
            frozen = float(text.split("\nrunway_gc_frozen_objects ")[1].split()[0])
            assert frozen > 10_000, (service, port, frozen)


async def test_rate_limit_answers_429_with_retry_after(stack: Stack) -> None:
    # Last: it spends this client's burst. 600 quick requests far exceed
    # 100 r/s with a burst of 200.
    url = f"http://127.0.0.1:{stack.gateway}/openapi.json"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:

        async def one() -> tuple[int, str | None, bytes]:
            async with session.get(url) as resp:
                return resp.status, resp.headers.get("Retry-After"), await resp.read()

        answers = await asyncio.gather(*(one() for _ in range(600)))
    limited = [a for a in answers if a[0] == 429]
    assert limited, sorted({a[0] for a in answers})
    _, retry_after, body = limited[0]
    assert int(retry_after) >= 1
    assert list(json.loads(body)) == ["error"]
