"""The lock-free metric families expose exactly what prometheus_client's own
would, and the handler wrapper records every request and maps every failure."""

from __future__ import annotations

import random

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from services.common.errors import ApiError
from services.common.metrics import LATENCY_BUCKETS, LoopCounter, LoopHistogram, Metrics
from services.common.observe import observed


def samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    # _created is prometheus_client's own optional series; ours have none.
    return [line for line in text.splitlines() if line[0] != "#" and "_created" not in line]


def test_loop_histogram_and_counter_expose_what_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = LoopHistogram(ours, "h_seconds", "doc", ["route", "status"], LATENCY_BUCKETS)
    reference = Histogram(
        "h_seconds", "doc", ["route", "status"], buckets=LATENCY_BUCKETS, registry=theirs
    )
    counter = LoopCounter(ours, "c", "doc", ["tier"])
    reference_counter = Counter("c", "doc", ["tier"], registry=theirs)
    rng = random.Random(7)
    # Every bound itself (le is inclusive), values past the last bound, and noise.
    values = [*LATENCY_BUCKETS, 0.0, 9.0, *(rng.expovariate(200) for _ in range(500))]
    for i, value in enumerate(values):
        labels = ("/a" if i % 3 else "/b", "200" if i % 5 else "503")
        histogram.observe(value, *labels)
        reference.labels(*labels).observe(value)
        counter.labels(labels[0]).inc()
        reference_counter.labels(labels[0]).inc()
    assert samples(ours) == samples(theirs)


async def test_observed_records_status_and_maps_failures_to_json() -> None:
    metrics = Metrics("probe")

    async def fails(request: web.Request) -> web.Response:
        raise ApiError(422, "rating must be 1 to 5")

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=b"{}")

    failing = observed(fails, metrics, "/x", "POST")
    response = await failing(make_mocked_request("POST", "/x"))
    assert response.status == 422 and response.body == b'{"error":"rating must be 1 to 5"}'
    await observed(ok, metrics, "/x", "GET")(make_mocked_request("GET", "/x"))
    await observed(ok, metrics, "/x", "GET")(make_mocked_request("GET", "/x"))
    assert metrics.in_flight_count == 0
    text = metrics.exposition().decode()
    assert (
        'runway_http_request_duration_seconds_count{method="POST",route="/x",status="422"} 1.0'
        in text
    )
    assert (
        'runway_http_request_duration_seconds_count{method="GET",route="/x",status="200"} 2.0'
        in text
    )
    assert "runway_http_requests_in_flight 0.0" in text
