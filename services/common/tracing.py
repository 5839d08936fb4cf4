"""Whether this process traces, and the little the serving path needs either way.

Tracing (OpenTelemetry, exported over OTLP/HTTP) is on when the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set
and `OTEL_SDK_DISABLED` is not true; sampling follows `OTEL_TRACES_SAMPLER` /
`OTEL_TRACES_SAMPLER_ARG` (the SDK reads them; parentbased_always_on by default).

Off, nothing of OpenTelemetry is imported and the request path is the one it
was before tracing existed: `observe.observed` picks its wrapper once, at route
registration, and `responses.cached_json` tests one module global. On,
`otel.py` (imported here, lazily) sets up the SDK, the asyncpg and redis
instrumentations and the traced wrapper (docs/decisions/0033-tracing.md)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

# The tracer once `configure` has turned tracing on; None while it is off.
TRACER: Any = None
# With tracing on, cached_json's lookup (otel.traced_lookup bound to TRACER):
# bound once here rather than imported on every request.
LOOKUP: Any = None


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure(service: str, env: Mapping[str, str] = os.environ) -> Any:
    """Turn tracing on for this process when the environment asks for it (once:
    the provider and the instrumentations are process-wide). The tracer, or None."""
    global TRACER, LOOKUP
    if TRACER is None and enabled(env):
        from . import otel

        TRACER = otel.setup(service)
        LOOKUP = functools.partial(otel.traced_lookup, TRACER)
    return TRACER


def trace_id(headers: Mapping[str, str]) -> str:
    """The trace id of a request's `traceparent` (the gateway always sends one),
    for log lines; "-" without a usable one. No parsing beyond slicing: the
    gateway forwards only a valid version-00 header."""
    value = headers.get("traceparent")
    if value is None or len(value) < 55:
        return "-"
    return value[3:35]
