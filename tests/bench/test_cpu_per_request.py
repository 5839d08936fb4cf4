"""What bench/cpu_per_request.py makes of a run's CPU seconds."""

from __future__ import annotations

import pytest

from bench.cpu_per_request import per_request

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
