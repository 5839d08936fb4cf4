"""Schemathesis against gateway/openapi.json, through a real gateway in front
of the real services, valid and invalid inputs alike: no 5xx, every answer's
status, content type and body as the document says (which makes every 4xx the
JSON error body and every 2xx its schema), and invalid input refused.

RUNWAY_SCHEMATHESIS_REQUESTS sets the total to reach (default 400, a
`make test` budget); the issue's full run is RUNWAY_SCHEMATHESIS_REQUESTS=5000.
It is spread evenly over the operations as Hypothesis's max_examples.
"""

from __future__ import annotations

import json
import math

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import OPENAPI_JSON
from tests.reliability.harness import env_int, record_figures
from tests.security.conftest import Surface

TARGET = env_int("RUNWAY_SCHEMATHESIS_REQUESTS", 400)

schema = schemathesis.openapi.from_path(OPENAPI_JSON)
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)
OPERATIONS = sum(1 for _ in schema.get_all_operations())
PER_OPERATION = max(10, math.ceil(TARGET / OPERATIONS))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

SENT: dict[str, int] = {}


@pytest.fixture(scope="module")
def http() -> requests.Session:
    with requests.Session() as session:
        yield session


@schema.parametrize()
@settings(
    max_examples=PER_OPERATION,
    deadline=None,
    database=None,  # no .hypothesis directory in the repository
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_through_the_gateway(
    case: schemathesis.Case, surface: Surface, http: requests.Session
) -> None:
    service = case.operation.definition.raw.get("x-runway-service") or _service_of(case)
    surface.require(service)
    response = case.call(base_url=f"http://127.0.0.1:{surface.port}", session=http, timeout=10)
    SENT[case.operation.label] = SENT.get(case.operation.label, 0) + 1
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if 400 <= response.status_code < 500:
        body = json.loads(response.content)
        assert list(body) == ["error"] and isinstance(body["error"], str), body
    case.validate_response(response, checks=CHECKS)


def _service_of(case: schemathesis.Case) -> str:
    path = case.operation.path
    if path.startswith("/reviews"):
        return "reviews"
    if path.startswith("/photos"):
        return "photos"
    return "qa" if path.startswith("/qa") else "overview"


def test_enough_requests_were_generated() -> None:
    """Runs after the generated cases (file order): the total is what was asked."""
    total = sum(SENT.values())
    record_figures(
        "schemathesis",
        {"target": TARGET, "sent": total, "operations": len(SENT), "per_operation": SENT},
    )
    if not SENT:
        pytest.skip("the generated cases did not run (deselected)")
    assert len(SENT) == OPERATIONS
    assert total >= TARGET
