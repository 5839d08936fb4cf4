"""The serving process carries no data tooling: importing a service's app and
building it loads no generator, loader or ETL module, and neither tqdm nor
supervisor (the `data` and `stack` extras the service images leave out)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.common import settings as cfg
from tests.conftest import ROOT

# Run in a fresh interpreter: this test process has imported everything.
PROBE = """
import json, sys
from services.common.settings import Settings
from services.{service} import app

app.create_app(Settings.from_env("{service}", env={{}}))
print(json.dumps(sorted(sys.modules)))
"""


def is_tooling(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in ("tqdm", "supervisor") or (
        parts[0] == "services" and len(parts) > 2 and parts[2] == "data"
    )


def modules_after_building(service: str, probe: str = PROBE) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", probe.format(service=service)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_building_the_app_imports_no_data_tooling(service: str) -> None:
    modules = modules_after_building(service)
    assert f"services.{service}.app" in modules  # the probe did build it
    assert [m for m in modules if is_tooling(m)] == []


def test_the_check_sees_a_loader_imported_by_the_app() -> None:
    """The same probe, with the app module importing its loader on the way."""
    probe = PROBE.replace(
        "from services.{service} import app",
        "from services.{service}.data import loader\nfrom services.{service} import app",
    )
    tooling = [m for m in modules_after_building("qa", probe) if is_tooling(m)]
    assert {"services.qa.data.loader", "services.common.data.bulk_copy", "tqdm"} <= set(tooling)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (lazy imports too), resolved
    against its package when relative."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_no_serving_module_names_the_tooling() -> None:
    """Statically, so that an import inside a function (run only under load,
    or at shutdown) is caught too: outside the data/ packages, no module of
    services/ imports one of them, tqdm or supervisor."""
    offenders = {}
    for path in sorted((ROOT / "services").rglob("*.py")):
        if "data" in path.relative_to(ROOT / "services").parts:
            continue
        found = sorted(m for m in imported_modules(path) if is_tooling(m))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_tracing_off_imports_no_opentelemetry(service: str) -> None:
    """Without OTEL_EXPORTER_OTLP_ENDPOINT none of the tracing machinery loads:
    no tracer provider, exporter, propagator or instrumentation, no otel.py.
    (redis-py 8 itself imports the OpenTelemetry API and metrics SDK when they
    are installed, for its own opt-in metrics; it records nothing unless
    configured, with or without them: docs/decisions/0033-tracing.md.)"""
    tracing = (
        "services.common.otel",
        "opentelemetry.sdk.trace",
        "opentelemetry.exporter",
        "opentelemetry.instrumentation",
        "opentelemetry.trace.propagation.tracecontext",
    )
    modules = modules_after_building(service)
    assert [m for m in modules if m.startswith(tracing)] == []
