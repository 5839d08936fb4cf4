"""The gateway behind a load balancer (GATEWAY_TRUSTED_PROXIES: the realip
module) and the W3C trace context it forwards and logs. The "proxy" and the
"clients" are sockets bound to other loopback addresses (127.0.0.2, 127.0.0.3),
so nginx sees them as different peers."""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path

from tests.gateway.conftest import start_gateway
from tests.gateway.harness import Gateway, Response, ServiceInstance, request

PROXY = "127.0.0.2"
OTHER = "127.0.0.3"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def request_from(
    source: str, port: int, path: str, headers: Mapping[str, str] | None = None
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def statuses(source: str, port: int, xff: str | None, n: int) -> list[int]:
    headers = {"X-Forwarded-For": xff} if xff else {}
    return [request_from(source, port, "/openapi.json", headers).status for _ in range(n)]


def log_line(gateway: Gateway, needle: str, timeout_s: float = 5) -> dict:
    deadline = time.monotonic() + timeout_s  # the access log is flushed every second
    while time.monotonic() < deadline:
        if gateway.access_log.exists():
            for line in gateway.access_log.read_text().splitlines():
                if needle in line:
                    return json.loads(line)
        time.sleep(0.1)
    raise AssertionError(f"no access log line with {needle!r}")


# --- realip ---------------------------------------------------------------------------


def test_clients_behind_a_trusted_proxy_get_separate_buckets(
    reviews_instances: list[ServiceInstance], tmp_path: Path
) -> None:
    gw = start_gateway(
        tmp_path,
        reviews_instances[0].port,
        GATEWAY_RATE="1",
        GATEWAY_BURST="2",
        GATEWAY_TRUSTED_PROXIES=f"{PROXY}/32",
    )
    try:
        first = statuses(PROXY, gw.port, "198.51.100.1", 6)
        # A second user behind the same proxy: a bucket of its own, still full.
        second = statuses(PROXY, gw.port, "198.51.100.2", 3)
        # A chain: the load balancer appends the peer it saw; realip walks back
        # past trusted addresses only, so the client is the last untrusted one.
        third = statuses(PROXY, gw.port, f"203.0.113.9, {PROXY}", 3)
        rid = f"realip-{time.time_ns()}"
        request_from(
            PROXY,
            gw.port,
            "/openapi.json",
            {"X-Forwarded-For": "198.51.100.77", "X-Request-Id": rid},
        )
        line = log_line(gw, rid)
    finally:
        gw.stop()
    assert first[:3] == [200, 200, 200] and 429 in first[3:], first
    assert second == [200, 200, 200], second
    assert third == [200, 200, 200], third
    assert line["remote_addr"] == "198.51.100.77"


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(
    reviews_instances: list[ServiceInstance], tmp_path: Path
) -> None:
    gw = start_gateway(
        tmp_path,
        reviews_instances[0].port,
        GATEWAY_RATE="1",
        GATEWAY_BURST="2",
        GATEWAY_TRUSTED_PROXIES=f"{PROXY}/32",
    )
    try:
        spoofed = [
            request_from(
                OTHER, gw.port, "/openapi.json", {"X-Forwarded-For": f"192.0.2.{i}"}
            ).status
            for i in range(6)
        ]
        rid = f"spoof-{time.time_ns()}"
        request_from(
            OTHER, gw.port, "/openapi.json", {"X-Forwarded-For": "192.0.2.200", "X-Request-Id": rid}
        )
        line = log_line(gw, rid)
    finally:
        gw.stop()
    # One bucket for the peer, whatever it claims: three pass, the rest are limited.
    assert spoofed[:3] == [200, 200, 200] and spoofed[3:] == [429, 429, 429], spoofed
    assert line["remote_addr"] == OTHER


def test_without_trusted_proxies_forwarded_for_is_ignored(
    reviews_instances: list[ServiceInstance], tmp_path: Path
) -> None:
    gw = start_gateway(tmp_path, reviews_instances[0].port, GATEWAY_RATE="1", GATEWAY_BURST="2")
    try:
        got = [
            request_from(
                PROXY, gw.port, "/openapi.json", {"X-Forwarded-For": f"192.0.2.{i}"}
            ).status
            for i in range(6)
        ]
    finally:
        gw.stop()
    assert "real_ip" not in gw.config.conf_path.read_text().split("no trusted proxies")[0]
    assert got[:3] == [200, 200, 200] and 429 in got[3:], got


# --- trace context ----------------------------------------------------------------------


def test_a_callers_traceparent_is_forwarded_and_logged(
    gateway: Gateway, reviews_instances: list[ServiceInstance]
) -> None:
    rid = f"trace-{time.time_ns()}"
    traceparent = f"00-{TRACE}-{PARENT}-01"
    resp = request(
        gateway.port,
        "PUT",
        "/reviews/999999999/report",
        headers={"X-Request-Id": rid, "traceparent": traceparent},
    )
    assert resp.status in (204, 404), resp.body
    line = log_line(gateway, rid)
    assert line["trace_id"] == TRACE and line["parent_span_id"] == PARENT
    # The service got the same context: its write log names the trace.
    deadline = time.monotonic() + 5
    logged = ""
    while rid not in logged and time.monotonic() < deadline:
        logged = "".join(i.log_path.read_text() for i in reviews_instances)
        time.sleep(0.05)
    assert f"request_id={rid} trace_id={TRACE}" in logged


def test_the_gateway_starts_a_trace_when_there_is_none_or_it_is_invalid(
    gateway: Gateway, reviews_instances: list[ServiceInstance]
) -> None:
    bad = ["", "01-zz", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01"]
    for i, value in enumerate(bad):
        rid = f"gen-{i}-{time.time_ns()}"
        headers = {"X-Request-Id": rid, **({"traceparent": value} if value else {})}
        request(gateway.port, "PUT", "/reviews/999999999/report", headers=headers)
        line = log_line(gateway, rid)
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"]), line
        assert line["trace_id"] != "0" * 32 and line["trace_id"] != TRACE
        assert line["parent_span_id"] == line["trace_id"][:16]
        deadline = time.monotonic() + 5
        logged = ""
        while rid not in logged and time.monotonic() < deadline:
            logged = "".join(x.log_path.read_text() for x in reviews_instances)
            time.sleep(0.05)
        assert f"request_id={rid} trace_id={line['trace_id']}" in logged
