"""Validate real responses against gateway/openapi.json: the status must be one
the operation documents, and the body must match that response's schema
(JSON Schema 2020-12, refs resolved inside the document). A Recorder notes
which (operation, status) pairs were exercised, so a test can prove coverage."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.openapi import OPENAPI_JSON

DOC_URI = "urn:runway:openapi"
METHODS = ("get", "put", "post", "delete", "patch")


@cache
def document() -> dict[str, Any]:
    return json.loads(OPENAPI_JSON.read_text())


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    return Registry().with_resource(DOC_URI, resource)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def operations(service: str | None = None) -> list[tuple[str, str]]:
    """(METHOD, path template) of every operation, or of one service's."""
    out = []
    for path, item in document()["paths"].items():
        if service is None or item["x-runway-service"] == service:
            out += [(m.upper(), path) for m in METHODS if m in item]
    return out


def match_template(path: str) -> str | None:
    """The path template a concrete path (query and trailing slash dropped) falls under."""
    bare = path.split("?")[0]
    if len(bare) > 1:
        bare = bare.rstrip("/")
    for template in document()["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, bare):
            return template
    return None


def _response_pointer(template: str, method: str, status: int) -> tuple[str, dict[str, Any]]:
    responses = document()["paths"][template][method.lower()]["responses"]
    key = str(status)
    assert key in responses, f"{method} {template}: status {status} is not documented"
    response = responses[key]
    base = _pointer("", "paths", template, method.lower(), "responses", key)
    if "$ref" in response:
        base = response["$ref"].removeprefix("#")
        name = base.rsplit("/", 1)[1]
        response = document()["components"]["responses"][name]
    return base, response


def validate(method: str, path: str, status: int, content_type: str, body: bytes) -> str:
    """Assert one real response matches the document; returns the path template."""
    template = match_template(path)
    assert template is not None, f"{path} is not in the OpenAPI document"
    base, response = _response_pointer(template, method, status)
    content = response.get("content")
    if content is None:
        assert body == b"", f"{method} {path} {status}: expected no body, got {body[:200]!r}"
        return template
    media = content_type.split(";")[0].strip()
    assert media in content, f"{method} {path} {status}: {media} not in {list(content)}"
    instance: Any = json.loads(body) if media == "application/json" else body.decode()
    schema = {"$ref": f"{DOC_URI}#{base}/content/{_pointer(media)}/schema"}
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{method} {path} {status}: " + "; ".join(
        f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]
    )
    return template


@dataclass
class Recorder:
    """Which (METHOD, template, status) triples the test saw and validated."""

    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def check(self, method: str, path: str, status: int, content_type: str, body: bytes) -> None:
        template = validate(method, path, status, content_type, body)
        self.seen.add((method.upper(), template, status))

    def missing_successes(self, service: str, exempt: set[tuple[str, str]] = frozenset()) -> list:
        """Operations of `service` whose 2xx answer was never validated."""
        done = {(m, t) for m, t, s in self.seen if 200 <= s < 300}
        return [op for op in operations(service) if op not in done and op not in exempt]
