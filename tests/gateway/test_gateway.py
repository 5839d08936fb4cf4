"""The gateway's behaviour through a real nginx in front of real reviews
instances: routing, the JSON errors it produces itself, hidden operational
routes, limits, X-Request-Id, headers, CORS, and failover between instances."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from gateway.openapi import OPENAPI_JSON
from tests.gateway.conftest import start_gateway
from tests.gateway.harness import Gateway, ServiceInstance, request

JSON_BODY = {"Content-Type": "application/json"}


def review(product_id: int) -> bytes:
    return json.dumps(
        {
            "product_id": product_id,
            "rating": 5,
            "summary": "Through the gateway",
            "body": "A review body long enough for the contract's fifty character minimum.",
            "recommend": True,
            "name": "gw",
            "email": "gw@example.com",
        }
    ).encode()


def assert_json_error(resp, status: int) -> str:
    assert resp.status == status, resp.body
    assert resp.header("Content-Type").startswith("application/json")
    body = resp.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    return body["error"]


# --- routing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/reviews?product_id=1", "/reviews/?product_id=1", "/reviews/meta?product_id=1"]
)
def test_reviews_routes_reach_the_reviews_service(gateway: Gateway, path: str) -> None:
    resp = request(gateway.port, "GET", path)
    assert resp.status == 200, resp.body
    assert resp.header("Content-Type").startswith("application/json")


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/products"),
        ("GET", "/products/1"),
        ("GET", "/products/1/styles"),
        ("GET", "/products/"),
        ("GET", "/cart"),
        ("GET", "/cart/"),
        ("POST", "/interactions"),
        ("POST", "/interactions/"),
        ("GET", "/qa/questions?product_id=1"),
        ("PUT", "/qa/answers/1/helpful"),
    ],
)
def test_other_services_routes_are_routed_to_their_upstream(
    gateway: Gateway, method: str, path: str
) -> None:
    # Nothing listens on the overview and qa ports here: a routed request is the
    # gateway's own 502 (an unrouted one would be a 404), logged with the upstream.
    resp = request(gateway.port, method, path, body=b"{}", headers=JSON_BODY)
    assert_json_error(resp, 502)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/productsX",
        "/qa",
        "/qa/",
        "/review",
        "/reviewsX",
        "/cart/x",
        "/cartX",
        "/interactions/x",
        "/api/reviews",
    ],
)
def test_unknown_path_is_a_json_404(gateway: Gateway, path: str) -> None:
    assert_json_error(request(gateway.port, "GET", path), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/healthz",
        "/readyz",
        "/reviews/../metrics",
        "/reviews/%2e%2e/metrics",
        "/reviews/..%2fmetrics",
        "/reviews/%2E%2E/readyz",
        "/reviews/./../healthz",
    ],
)
def test_operational_routes_are_not_public(
    gateway: Gateway, reviews_instances: list[ServiceInstance], path: str
) -> None:
    assert_json_error(request(gateway.port, "GET", path), 404)
    # ...while the instance itself does serve them.
    assert request(reviews_instances[0].port, "GET", "/metrics").status == 200


def test_get_and_put_with_a_small_json_body_pass_through(gateway: Gateway) -> None:
    resp = request(gateway.port, "GET", "/reviews?product_id=1", body=b"{}", headers=JSON_BODY)
    assert resp.status == 200
    # The service's own 404 (unknown review), not the gateway's: it passed through.
    resp = request(gateway.port, "PUT", "/reviews/2147483000/helpful", b"{}", JSON_BODY)
    message = assert_json_error(resp, 404)
    assert "no public route" not in message


def test_write_through_the_gateway_then_read_from_each_instance(
    gateway: Gateway, reviews_instances: list[ServiceInstance]
) -> None:
    resp = request(gateway.port, "POST", "/reviews", review(77), JSON_BODY)
    assert resp.status == 201, resp.body
    for instance in reviews_instances:
        listed = request(instance.port, "GET", "/reviews?product_id=77").json()
        assert [r["summary"] for r in listed["results"]] == ["Through the gateway"]


# --- errors the gateway produces ------------------------------------------------------


def test_body_over_1_mib_is_a_json_413(gateway: Gateway) -> None:
    resp = request(gateway.port, "POST", "/reviews", b"x" * (1024 * 1024 + 1), JSON_BODY)
    assert_json_error(resp, 413)


def test_body_of_1_mib_is_not_refused_by_the_gateway(gateway: Gateway) -> None:
    # 1 MiB exactly reaches the service (which answers 413 or 422 itself, as JSON).
    resp = request(gateway.port, "POST", "/reviews", b" " * (1024 * 1024), JSON_BODY)
    assert resp.status in (413, 422)
    assert resp.header("Content-Type").startswith("application/json")


def test_rate_limit_answers_json_429_with_retry_after(
    reviews_instances: list[ServiceInstance], tmp_path: Path
) -> None:
    gw = start_gateway(tmp_path, reviews_instances[0].port, GATEWAY_RATE="1", GATEWAY_BURST="2")
    try:
        statuses = [request(gw.port, "GET", "/openapi.json") for _ in range(8)]
    finally:
        gw.stop()
    limited = [r for r in statuses if r.status == 429]
    assert len(limited) >= 4, [r.status for r in statuses]
    assert_json_error(limited[0], 429)
    assert int(limited[0].header("Retry-After")) >= 1
    assert statuses[0].header("Retry-After") is None


def test_rate_limit_can_be_switched_off(
    reviews_instances: list[ServiceInstance], tmp_path: Path
) -> None:
    gw = start_gateway(
        tmp_path, reviews_instances[0].port, GATEWAY_RATE_LIMIT="off", GATEWAY_RATE="1"
    )
    try:
        statuses = {request(gw.port, "GET", "/openapi.json").status for _ in range(30)}
    finally:
        gw.stop()
    assert statuses == {200}
    assert "limit_req" not in gw.config.conf_path.read_text().split("# rate limiting is off")[0]


def test_all_instances_down_is_a_json_502(
    reviews_instances: list[ServiceInstance], tmp_path: Path
) -> None:
    from tests.conftest import free_port

    gw = start_gateway(tmp_path, free_port())
    try:
        resp = request(gw.port, "GET", "/reviews?product_id=1")
    finally:
        gw.stop()
    assert_json_error(resp, 502)


# --- request ids, headers, versions ----------------------------------------------------


def test_request_id_is_echoed_and_passed_to_the_service(
    gateway: Gateway, reviews_instances: list[ServiceInstance]
) -> None:
    rid = f"test-{time.time_ns()}"
    resp = request(gateway.port, "GET", "/reviews?product_id=5", headers={"X-Request-Id": rid})
    assert resp.status == 200
    assert resp.header("X-Request-Id") == rid
    deadline = time.monotonic() + 5
    logged = ""
    while rid not in logged and time.monotonic() < deadline:
        logged = "".join(i.log_path.read_text() for i in reviews_instances)
        time.sleep(0.05)
    assert f"request_id={rid}" in logged


def test_request_id_is_generated_when_absent_or_unusable(gateway: Gateway) -> None:
    for headers in ({}, {"X-Request-Id": 'bad id with "quotes"'}):
        for path in ("/reviews?product_id=1", "/nope"):
            rid = request(gateway.port, "GET", path, headers=headers).header("X-Request-Id")
            assert rid is not None and re.fullmatch(r"[0-9a-f]{32}", rid), rid


def test_a_request_id_appears_once(gateway: Gateway) -> None:
    resp = request(gateway.port, "GET", "/reviews?product_id=1", headers={"X-Request-Id": "a1"})
    assert resp.headers.get_all("X-Request-Id") == ["a1"]


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/reviews?product_id=1", None),
        ("GET", "/nope", None),
        ("GET", "/products", None),
        ("POST", "/reviews", b"x" * (1024 * 1024 + 1)),
        ("GET", "/openapi.json", None),
    ],
)
def test_no_software_version_in_headers_or_error_pages(
    gateway: Gateway, method: str, path: str, body: bytes | None
) -> None:
    resp = request(gateway.port, method, path, body)
    assert resp.header("Server") == "nginx"  # server_tokens off: no version
    for name, value in resp.headers.items():
        assert not re.search(r"nginx/|aiohttp|python", value, re.I), (name, value)
    if resp.status >= 400:
        assert b"nginx" not in resp.body and b"<html" not in resp.body


def test_security_headers(gateway: Gateway) -> None:
    resp = request(gateway.port, "GET", "/reviews?product_id=1")
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert resp.header("Cache-Control") == "no-store"
    assert resp.header("X-Frame-Options") == "DENY"
    assert "default-src 'none'" in resp.header("Content-Security-Policy")
    assert resp.header("Access-Control-Allow-Origin") is None  # no Origin sent


def test_cors_preflight_for_the_front_end_origin(gateway: Gateway) -> None:
    headers = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    resp = request(gateway.port, "OPTIONS", "/reviews", headers=headers)
    assert resp.status == 204
    assert resp.header("Access-Control-Allow-Origin") == "http://localhost:3000"
    assert "POST" in resp.header("Access-Control-Allow-Methods")
    assert "Content-Type" in resp.header("Access-Control-Allow-Headers")
    assert resp.header("Access-Control-Allow-Credentials") == "true"
    simple = request(
        gateway.port, "GET", "/reviews?product_id=1", headers={"Origin": headers["Origin"]}
    )
    assert simple.header("Access-Control-Allow-Origin") == "http://localhost:3000"
    assert "X-Request-Id" in simple.header("Access-Control-Expose-Headers")
    assert simple.header("Access-Control-Allow-Methods") is None


def test_cors_ignores_other_origins(gateway: Gateway) -> None:
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    resp = request(gateway.port, "OPTIONS", "/reviews", headers=headers)
    assert resp.header("Access-Control-Allow-Origin") is None
    assert resp.header("Access-Control-Allow-Methods") is None


def test_openapi_document_is_served(gateway: Gateway) -> None:
    resp = request(gateway.port, "GET", "/openapi.json")
    assert resp.status == 200
    assert resp.header("Content-Type").startswith("application/json")
    assert resp.json() == json.loads(OPENAPI_JSON.read_text())
    assert resp.json()["openapi"].startswith("3.1")
    assert resp.header("X-Request-Id")


def test_status_listener_is_internal(gateway: Gateway) -> None:
    resp = request(gateway.config.status_port, "GET", "/nginx_status")
    assert resp.status == 200 and b"Active connections" in resp.body
    assert_json_error(request(gateway.port, "GET", "/nginx_status"), 404)
    assert gateway.config.status_host == "127.0.0.1"


def test_access_log_is_json_with_upstream_time_and_cache_status(gateway: Gateway) -> None:
    rid = f"log-{time.time_ns()}"
    request(gateway.port, "GET", "/reviews?product_id=3", headers={"X-Request-Id": rid})
    deadline = time.monotonic() + 5  # the log is buffered, flushed every second
    line = None
    while line is None and time.monotonic() < deadline:
        lines = gateway.access_log.read_text().splitlines() if gateway.access_log.exists() else []
        line = next((json.loads(x) for x in lines if rid in x), None)
        time.sleep(0.1)
    assert line is not None
    assert line["status"] == 200 and line["upstream_status"] == "200"
    assert float(line["upstream_response_time"]) >= 0
    assert line["cache"] in ("local", "redis", "db", "shared")
    assert line["uri"] == "/reviews?product_id=3"


def test_the_cache_tier_is_logged_not_sent(gateway: Gateway) -> None:
    resp = request(gateway.port, "GET", "/reviews?product_id=4")
    assert resp.status == 200
    assert resp.header("X-Cache") is None


# --- keepalive and failover ------------------------------------------------------------


def test_a_killed_instance_does_not_interrupt_service(
    gateway: Gateway, reviews_instances: list[ServiceInstance]
) -> None:
    # Warm keep-alive connections to both instances first.
    for _ in range(10):
        assert request(gateway.port, "GET", "/reviews?product_id=1").status == 200
    victim = reviews_instances[1]
    victim.kill()
    try:
        statuses = [
            request(gateway.port, "GET", f"/reviews?product_id={i}").status for i in range(1, 41)
        ]
        assert statuses == [200] * 40
        # The PUT is idempotent for nginx and is retried on the live instance too.
        resp = request(gateway.port, "PUT", "/reviews/2147483000/report", b"{}", JSON_BODY)
        assert resp.status == 404
    finally:
        victim.start()
    assert request(victim.port, "GET", "/readyz").status == 200
