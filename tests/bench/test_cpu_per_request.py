"""What bench/cpu_per_request.py makes of a run's CPU seconds."""

from __future__ import annotations

import pytest

from bench.cpu_per_request import per_request, routes_alone

CPU = {
    "overview": 3.0,
    "reviews": 2.0,
    "qa": 1.0,
    "nginx": 1.5,
    "ceiling-nginx": 0.5,
    "ceiling-aiohttp": 4.0,
    "postgres": 2.5,
    "redis": 0.25,
    "wrk": 1.0,
}


def test_the_services_are_the_app_behind_the_gateway() -> None:
    us = per_request({"name": "W2", "requests": 50_000, "cpu_s": CPU})
    assert us == pytest.approx(
        {"app": 120.0, "nginx": 30.0, "postgres": 50.0, "redis": 5.0, "wrk": 20.0}
    )


def test_a_ceiling_counts_its_own_aiohttp_and_nginx() -> None:
    us = per_request({"name": "ceiling-query", "requests": 100_000, "cpu_s": CPU})
    assert us["app"] == pytest.approx(40.0)
    assert us["nginx"] == pytest.approx(5.0)


def _workload(name: str, ops: dict[str, int], requests: int, app_s: float) -> dict:
    cpu = {"overview": app_s, "reviews": 0.0, "qa": 0.0} | {
        k: 0.0 for k in ("nginx", "postgres", "redis", "wrk")
    }
    return {"name": name, "ops": ops, "requests": requests, "cpu_s": cpu}


def test_a_mix_alone_is_its_routes_costs_weighted_by_the_mix() -> None:
    run = {
        "workloads": [
            _workload("cold-a", {"a": 1}, 10_000, 1.0),  # 100 µs
            _workload("cold-bc", {"b": 1, "c": 1}, 10_000, 3.0),  # 300 µs
            _workload("W2", {"a": 3, "b": 1}, 10_000, 5.0),
        ]
    }
    expected = routes_alone(run, run["workloads"][2])
    assert expected is not None
    assert expected["app"] == pytest.approx((3 * 100 + 300) / 4)
    # A single route, or a mix with a route no cold-* workload ran, has none.
    assert routes_alone(run, run["workloads"][0]) is None
    assert routes_alone(run, _workload("W9", {"a": 1, "d": 1}, 1, 1.0)) is None
