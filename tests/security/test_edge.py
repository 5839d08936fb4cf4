"""The public edge with all three services behind it, for what
tests/gateway/test_gateway.py (a gateway in front of reviews only) does not
already cover: slow clients cut off without starving others, no operational
route of any service reachable, no version and the JSON-API security headers
on every service's answers (errors included), errors nginx raises while
reading the request line, and no reviewer, asker or answerer email in any
answer. Rate limiting (429 + Retry-After), the 1 MiB limit, CORS and the
status listener are in tests/gateway/test_gateway.py; non-root images in
tests/infra/test_dockerfiles.py."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from gateway.openapi import OPENAPI_JSON
from tests.gateway.harness import Response
from tests.security.conftest import Surface
from tests.security.test_bad_input import answer, assert_error, call, question, review

HEADER_TIMEOUT_S = 10  # client_header_timeout / client_body_timeout in nginx.conf.template
SLOW_CLIENTS = 40


# --- slow clients -----------------------------------------------------------------------


def slow_client(port: int, first: bytes, result: dict, key: str) -> None:
    """Send `first`, then one header byte every half second: never a whole request."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S + 10) as s:
            s.sendall(first)
            while time.monotonic() - start < HEADER_TIMEOUT_S + 8:
                s.sendall(b"X")
                s.settimeout(0.5)
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    continue
                result[key] = ("answered" if data else "closed", time.monotonic() - start, data)
                return
            result[key] = ("still open", time.monotonic() - start, b"")
    except OSError as exc:  # reset by nginx (reset_timedout_connection on)
        result[key] = (f"reset: {exc!r}", time.monotonic() - start, b"")


def test_slow_clients_are_cut_off_and_do_not_starve_others(surface: Surface) -> None:
    conf = surface.gateway.config.conf_path.read_text()
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert re.search(rf"{directive} {HEADER_TIMEOUT_S}s;", conf), directive
    assert "reset_timedout_connection on;" in conf
    results: dict[str, tuple] = {}
    slow_header = b"GET /reviews?product_id=1 HTTP/1.1\r\nHost: x\r\nX-Slow: "
    # A body promised and trickled: the body timeout applies between reads, so
    # this one stalls instead (nothing is sent after the headers).
    threads = [
        threading.Thread(target=slow_client, args=(surface.port, slow_header, results, f"h{i}"))
        for i in range(SLOW_CLIENTS)
    ]
    stalled = socket.create_connection(("127.0.0.1", surface.port))
    stalled.sendall(
        b"POST /reviews HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    for t in threads:
        t.start()
    time.sleep(1)
    started = time.monotonic()
    resp = call(surface, "GET", "/reviews?product_id=1")
    assert resp.status == 200 and time.monotonic() - started < 1.0, "a slow client starved others"
    for t in threads:
        t.join()
    stalled.settimeout(HEADER_TIMEOUT_S + 5)
    try:
        body_answer = stalled.recv(4096)
    except OSError as exc:
        body_answer = repr(exc).encode()
    finally:
        stalled.close()
    outcomes = {v[0].split(":")[0] for v in results.values()}
    assert outcomes <= {"closed", "reset", "answered"}, results
    assert max(v[1] for v in results.values()) < HEADER_TIMEOUT_S + 3
    # Cut off means no answer to the half-sent request (a 408 at most).
    assert all(v[2] == b"" or b" 408 " in v[2][:20] for v in results.values())
    assert b"200 OK" not in body_answer


# --- internal routes, versions, headers -------------------------------------------------

SNEAKY = [
    "/metrics",
    "/healthz",
    "/readyz",
    "/metrics/",
    "//metrics",
    "/METRICS",
    "/metrics?x=1",
    "/products/../metrics",
    "/products/%2e%2e/metrics",
    "/products/1/../../readyz",
    "/qa/../healthz",
    "/qa/%2E%2E/metrics",
    "/cart/../metrics",
    "/interactions/..%2Fmetrics",
    "/reviews/..;/metrics",
    "/qa/questions/1/answers/../../../../metrics",
    "/reviews%2fmetrics",
    "/.env",
    "/.git/config",
    "/nginx_status",
    "/openapi.json/../metrics",
]


@pytest.mark.parametrize("path", SNEAKY)
def test_no_operational_route_of_any_service_is_public(surface: Surface, path: str) -> None:
    resp = call(surface, "GET", path)
    assert resp.status in (400, 404), (path, resp.status)
    assert_error(resp, resp.status)
    assert b"runway_" not in resp.body and b'"database"' not in resp.body


ROUTES = [
    ("overview", "GET", "/products?count=2", None),
    ("overview", "GET", "/products/1/styles", None),
    ("overview", "GET", "/products/2147483000", None),
    ("overview", "POST", "/interactions", {"element": "a"}),
    ("reviews", "GET", "/reviews/meta?product_id=1", None),
    ("reviews", "GET", "/reviews?product_id=x", None),
    ("qa", "GET", "/qa/questions?product_id=1", None),
    ("qa", "PUT", "/qa/answers/2147483000/helpful", None),
    ("qa", "POST", "/qa/questions", {"body": ""}),
]


@pytest.mark.parametrize("service,method,path,body", ROUTES)
def test_every_service_answer_has_no_version_and_the_security_headers(
    surface: Surface, service: str, method: str, path: str, body: object
) -> None:
    surface.require(service)
    resp = call(surface, method, path, body)
    assert_headers(resp)


def assert_headers(resp: Response) -> None:
    assert resp.header("Server") == "nginx"
    for name, value in resp.headers.items():
        assert not re.search(r"nginx/|aiohttp|python|uvloop", value, re.I), (name, value)
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert resp.header("X-Frame-Options") == "DENY"
    assert resp.header("Referrer-Policy") == "no-referrer"
    assert "default-src 'none'" in resp.header("Content-Security-Policy")
    assert resp.header("Cache-Control") == "no-store"
    assert resp.header("X-Request-Id")
    if resp.body:
        assert resp.header("Content-Type").startswith("application/json")


@pytest.mark.parametrize(
    "path", ["/products/1%00", "/qa/questions/1%00/answers", "/%00", "/products%00/metrics"]
)
def test_errors_nginx_raises_while_reading_the_request_line_are_json(
    surface: Surface, path: str
) -> None:
    resp = call(surface, "GET", path)
    assert resp.status == 400 and b"nginx" not in resp.body
    assert_error(resp, 400)


# --- emails are never returned ----------------------------------------------------------


def test_no_route_returns_an_email(surface: Surface) -> None:
    for service in ("reviews", "qa"):
        surface.require(service)
    tag = f"{time.time_ns()}"
    product = 7_000_000 + int(tag) % 1_000_000
    emails = {
        "reviewer": f"reviewer.{tag}@leak-check.example",
        "asker": f"asker.{tag}@leak-check.example",
        "answerer": f"answerer.{tag}@leak-check.example",
    }
    posted = call(surface, "POST", "/reviews", review(product, email=emails["reviewer"]))
    assert posted.status == 201
    assert (
        call(surface, "POST", "/qa/questions", question(product, email=emails["asker"])).status
        == 201
    )
    qid = call(surface, "GET", f"/qa/questions?product_id={product}").json()["results"][0][
        "question_id"
    ]
    assert (
        call(
            surface, "POST", f"/qa/questions/{qid}/answers", answer(email=emails["answerer"])
        ).status
        == 201
    )
    rid = call(surface, "GET", f"/reviews?product_id={product}").json()["results"][0]["review_id"]
    answers = [
        call(surface, "GET", path)
        for path in [
            f"/reviews?product_id={product}&count=1000",
            f"/reviews/?product_id={product}&sort=newest",
            f"/reviews?product_id={product}&sort=helpful",
            f"/reviews/meta?product_id={product}",
            f"/qa/questions?product_id={product}&count=1000",
            f"/qa/questions/{qid}/answers?count=1000",
            "/products?count=1000",
            "/products/1",
            "/products/1/styles",
            "/products/1/related",
            "/cart",
            "/openapi.json",
        ]
    ]
    answers += [
        call(surface, "PUT", f"/reviews/{rid}/helpful"),
        call(surface, "PUT", f"/qa/questions/{qid}/helpful"),
    ]
    assert all(r.status in (200, 204) for r in answers), [r.status for r in answers]
    for resp in answers:
        seen = resp.body + str(list(resp.headers.items())).encode()
        assert b"leak-check" not in seen and tag.encode() not in seen
    # Nor does the document describe an email in any response.
    responses = json.loads(OPENAPI_JSON.read_text())["components"]["schemas"]
    returned = {k: v for k, v in responses.items() if not k.startswith("New")}
    assert "email" not in json.dumps(returned)
