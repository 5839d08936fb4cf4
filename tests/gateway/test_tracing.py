"""Tracing end to end: a request sent through a real nginx with a `traceparent`
reaches a reviews instance exporting over OTLP/HTTP to a small receiver (an
aiohttp server decoding POST /v1/traces with opentelemetry-proto). The spans
for the request, the cache lookup (naming the tier), the SQL statement and the
Redis calls carry the caller's trace id, and so does the gateway's access log."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import RedisServer, free_port
from tests.gateway.conftest import start_gateway
from tests.gateway.harness import Gateway, ServiceInstance, request
from tests.gateway.test_edge import log_line


class Receiver:
    """OTLP/HTTP traces receiver on its own thread and loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[dict] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _traces(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value for a in span.attributes}
                    self.spans.append(
                        {
                            "service": service,
                            "name": span.name,
                            "kind": span.kind,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "attributes": attributes,
                        }
                    )
        return web.Response(
            body=b"", content_type="application/x-protobuf"
        )  # an empty ExportTraceServiceResponse

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def wait_for(self, trace_id: str, names: set[str], timeout_s: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            spans = [s for s in self.spans if s["trace_id"] == trace_id]
            if names <= {s["name"] for s in spans} | {_kind(s) for s in spans}:
                return spans
            time.sleep(0.1)
        got = [(s["name"], s["trace_id"]) for s in self.spans]
        raise AssertionError(f"spans {names} of {trace_id} not received; got {got}")


def _kind(span: dict) -> str:
    """ "sql" for an asyncpg statement, "redis" for a Redis call."""
    system = span["attributes"].get("db.system")
    return system.string_value if system is not None else ""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


def start_traced(
    reviews_db: str,
    redis_server: RedisServer,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
    **otel: str,
) -> Iterator[tuple[Gateway, ServiceInstance]]:
    logs = tmp_path_factory.mktemp("traced-logs")
    env = {
        "REVIEWS_DATABASE_URL": reviews_db,
        "REDIS_URL": redis_server.url,
        "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "4",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **otel,
    }
    instance = ServiceInstance("reviews", free_port(), env, logs / "reviews.log")
    instance.start()
    gateway = start_gateway(
        tmp_path_factory.mktemp("traced-gateway"),
        instance.port,
        INSTANCES="1",
        GATEWAY_RATE_LIMIT="off",
    )
    try:
        yield gateway, instance
    finally:
        gateway.stop()
        instance.stop()


@pytest.fixture(scope="module")
def traced_stack(
    reviews_db: str,
    redis_server: RedisServer,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, ServiceInstance]]:
    yield from start_traced(
        reviews_db,
        redis_server,
        receiver,
        tmp_path_factory,
        OTEL_TRACES_SAMPLER="parentbased_always_on",
    )


def test_a_traceparent_reaches_the_spans_of_request_cache_and_sql(
    traced_stack: tuple[Gateway, ServiceInstance], receiver: Receiver
) -> None:
    gateway, _ = traced_stack
    trace_id = f"{time.time_ns():032x}"[-32:]
    parent = "b7ad6b7169203331"
    rid = f"traced-{time.time_ns()}"
    product = 900_000 + time.time_ns() % 100_000  # never read before: the cache misses
    resp = request(
        gateway.port,
        "GET",
        f"/reviews?product_id={product}",
        headers={"traceparent": f"00-{trace_id}-{parent}-01", "X-Request-Id": rid},
    )
    assert resp.status == 200, resp.body
    spans = receiver.wait_for(trace_id, {"GET /reviews", "cache.lookup", "postgresql"})
    by_name = {s["name"]: s for s in spans}
    server = by_name["GET /reviews"]
    assert server["service"] == "runway-reviews"
    assert server["parent"] == parent  # the caller's span, forwarded by the gateway
    assert server["attributes"]["runway.request_id"].string_value == rid
    lookup = by_name["cache.lookup"]
    assert lookup["parent"] == server["span_id"]
    assert lookup["attributes"]["runway.cache.source"].string_value == "db"
    sql = [s for s in spans if _kind(s) == "postgresql"]
    assert sql and all(s["trace_id"] == trace_id for s in sql)
    assert any("SELECT" in s["attributes"]["db.statement"].string_value for s in sql), sql
    # The gateway's own line: the same trace, next to the request id.
    line = log_line(gateway, rid)
    assert line["trace_id"] == trace_id and line["parent_span_id"] == parent

    # A second miss is admitted (services/common/cache/admission.py): it asks
    # Redis, under the same trace, then loads and fills.
    request(
        gateway.port,
        "GET",
        f"/reviews?product_id={product}",
        headers={"traceparent": f"00-{trace_id[:-4]}cafe-{parent}-01"},
    )
    second = receiver.wait_for(f"{trace_id[:-4]}cafe", {"cache.lookup", "redis"})
    source = next(s for s in second if s["name"] == "cache.lookup")["attributes"]
    assert source["runway.cache.source"].string_value == "db"

    # A third read answers from the process's own tier, and says so.
    request(
        gateway.port,
        "GET",
        f"/reviews?product_id={product}",
        headers={"traceparent": f"00-{trace_id[:-4]}beef-{parent}-01"},
    )
    again = receiver.wait_for(f"{trace_id[:-4]}beef", {"cache.lookup"})
    source = next(s for s in again if s["name"] == "cache.lookup")["attributes"]
    assert source["runway.cache.source"].string_value == "local"


def test_the_gateway_starts_the_trace_when_the_caller_has_none(
    traced_stack: tuple[Gateway, ServiceInstance], receiver: Receiver
) -> None:
    gateway, _ = traced_stack
    rid = f"untraced-{time.time_ns()}"
    resp = request(gateway.port, "GET", "/reviews?product_id=3", headers={"X-Request-Id": rid})
    assert resp.status == 200
    line = log_line(gateway, rid)
    assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
    spans = receiver.wait_for(line["trace_id"], {"GET /reviews"})
    server = next(s for s in spans if s["name"] == "GET /reviews")
    assert server["parent"] == line["parent_span_id"]


def test_latency_exemplars_carry_the_trace_id(
    traced_stack: tuple[Gateway, ServiceInstance], receiver: Receiver
) -> None:
    gateway, instance = traced_stack
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    request(
        gateway.port,
        "GET",
        "/reviews?product_id=4",
        headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
    )
    req = urllib.request.Request(
        f"http://127.0.0.1:{instance.port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    lines = [
        x for x in body.splitlines() if x.startswith("runway_http_request_duration_seconds_bucket")
    ]
    assert any(f'# {{trace_id="{trace_id}"}}' in x and 'route="/reviews"' in x for x in lines)
    # The classic text format, as before, has none.
    with urllib.request.urlopen(f"http://127.0.0.1:{instance.port}/metrics", timeout=5) as resp:
        assert "trace_id" not in resp.read().decode()


def test_write_log_names_the_trace(
    traced_stack: tuple[Gateway, ServiceInstance], tmp_path: Path
) -> None:
    gateway, instance = traced_stack
    trace_id = "1af7651916cd43dd8448eb211c80319c"
    rid = f"write-{time.time_ns()}"
    request(
        gateway.port,
        "PUT",
        "/reviews/999999999/helpful",
        headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01", "X-Request-Id": rid},
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if f"request_id={rid} trace_id={trace_id}" in instance.log_path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(instance.log_path.read_text()[-2000:])


def test_a_ratio_sampler_records_by_trace_id_and_drops_the_rest_whole(
    reviews_db: str,
    redis_server: RedisServer,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """traceidratio at 0.5: a trace id whose low 64 bits are small is kept
    (request, lookup and SQL spans), one whose are large is dropped whole (no
    span at all, not even the SQL statement's), but still logged."""
    stack = start_traced(
        reviews_db,
        redis_server,
        receiver,
        tmp_path_factory,
        OTEL_TRACES_SAMPLER="traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.5",
    )
    gateway, instance = next(stack)
    try:
        base = f"{time.time_ns():016x}"[-16:]
        kept, dropped = f"{base}0000000000000001", f"{base}ffffffffffffffff"
        for i, trace_id in enumerate((kept, dropped)):
            product = 800_000 + time.time_ns() % 100_000 + i  # a cache miss: SQL runs
            resp = request(
                gateway.port,
                "GET",
                f"/reviews?product_id={product}",
                headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
            )
            assert resp.status == 200
        rid = f"dropped-write-{time.time_ns()}"
        request(
            gateway.port,
            "PUT",
            "/reviews/999999999/helpful",
            headers={"traceparent": f"00-{dropped}-b7ad6b7169203331-01", "X-Request-Id": rid},
        )
        receiver.wait_for(kept, {"GET /reviews", "cache.lookup", "postgresql"})
        time.sleep(1)  # ten export intervals
        assert [s for s in receiver.spans if s["trace_id"] == dropped] == []
        deadline = time.monotonic() + 5
        while f"request_id={rid} trace_id={dropped}" not in instance.log_path.read_text():
            assert time.monotonic() < deadline, instance.log_path.read_text()[-2000:]
            time.sleep(0.05)
    finally:
        stack.close()
