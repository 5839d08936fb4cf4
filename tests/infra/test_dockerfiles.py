"""The Dockerfiles, checked statically (no Docker daemon here): one Dockerfile
for every service (build args SERVICE and PORT) on a slim base, non-root user,
a health check, only the service's own code plus common and no data tooling,
exactly the pinned runtime dependencies from pyproject.toml (no extras); the
gateway image's config passes `nginx -t`."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway import render
from services.common import settings as cfg
from tests.conftest import ROOT

SERVICE_DOCKERFILE = ROOT / "services" / "Dockerfile"


def instructions_of(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instructions(path: Path) -> list[tuple[str, str]]:
    return instructions_of(path.read_text())


def service_steps(service: str) -> list[tuple[str, str]]:
    """The service Dockerfile's instructions with the build args compose.yaml
    passes for `service` substituted (tests/infra/test_compose.py)."""
    text = SERVICE_DOCKERFILE.read_text()
    for name, value in {"SERVICE": service, "PORT": str(cfg.BASE_PORTS[service])}.items():
        text = text.replace("${" + name + "}", value)
    return instructions_of(text)


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    """ENV as the image has it, a `${NAME}` taking the ARG's default."""
    env: dict[str, str] = {}
    args: dict[str, str] = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), value)
    return env


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pinned_dependencies() -> list[str]:
    return project()["dependencies"]


def distribution(requirement: str) -> str:
    return re.split(r"[\[=<>;]", requirement, maxsplit=1)[0].lower()


def test_runtime_dependencies_are_pinned() -> None:
    for dep in pinned_dependencies():
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", dep), dep


# Import name -> distribution where they differ.
DISTRIBUTION_OF = {"prometheus_client": "prometheus-client", "PIL": "pillow"}
# Installed for another package's sake, never imported: redis-py's C parser.
NOT_IMPORTED = {"hiredis"}
# OpenTelemetry's namespace package: the distribution by module prefix
# (services/common/otel.py, imported only when tracing is on).
OTEL_DISTRIBUTIONS = {
    "opentelemetry.instrumentation.asyncpg": "opentelemetry-instrumentation-asyncpg",
    "opentelemetry.instrumentation.redis": "opentelemetry-instrumentation-redis",
    "opentelemetry.exporter.otlp.proto.http": "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry.sdk": "opentelemetry-sdk",
    "opentelemetry": "opentelemetry-api",
}


def _top_level(module: str) -> str:
    if module.split(".")[0] == "opentelemetry":
        return next(d for prefix, d in OTEL_DISTRIBUTIONS.items() if module.startswith(prefix))
    return module.split(".")[0]


def serving_modules() -> list[Path]:
    """Every module under services/ but the data tooling (data/ packages)."""
    root = ROOT / "services"
    return [p for p in sorted(root.rglob("*.py")) if "data" not in p.relative_to(root).parts]


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of what `path` imports, at any depth, outside the stdlib."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(_top_level(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(_top_level(node.module))
    return {n for n in names if n not in sys.stdlib_module_names and n != "services"}


def test_runtime_dependencies_are_what_the_serving_code_imports() -> None:
    imported = set()
    for path in serving_modules():
        imported |= {DISTRIBUTION_OF.get(n, n) for n in third_party_imports(path)}
    runtime = {distribution(d) for d in pinned_dependencies()}
    assert imported == runtime - NOT_IMPORTED
    extras = project()["optional-dependencies"]
    assert [distribution(d) for d in extras["data"]] == ["tqdm"]
    assert [distribution(d) for d in extras["stack"]] == ["supervisor"]
    assert not runtime & {"tqdm", "supervisor"}
    assert "runway[data,stack]" in extras["dev"]  # `make venv` still gets everything


def test_one_dockerfile_builds_every_service() -> None:
    assert not list((ROOT / "services").glob("*/Dockerfile"))
    steps = instructions(SERVICE_DOCKERFILE)
    assert ("ARG", "SERVICE") in steps and ("ARG", "PORT") in steps
    # The build args come after the dependency layer, so the images share it.
    first_arg = [w for w, _ in steps].index("ARG")
    assert all(i < first_arg for i, (w, rest) in enumerate(steps) if "pip install" in rest)


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_service_dockerfile(service: str) -> None:
    steps = service_steps(service)
    words = [w for w, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    user = next(rest for w, rest in steps if w == "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    copied = {shlex.split(rest)[0] for w, rest in steps if w == "COPY"}
    assert copied == {
        "pyproject.toml",
        "services/__init__.py",
        "services/common",
        f"services/{service}",
    }
    healthcheck = next(rest for w, rest in steps if w == "HEALTHCHECK")
    assert "/healthz" in healthcheck
    env = env_of(steps)
    assert env["PORT"] == str(cfg.BASE_PORTS[service]) and env["HOST"] == "0.0.0.0"
    assert next(rest for w, rest in steps if w == "EXPOSE") == env["PORT"]
    # The command as the container's /bin/sh runs it (exec: python is PID 1).
    cmd = shlex.split(next(rest for w, rest in steps if w == "CMD").strip("[]").replace(",", " "))
    assert cmd[:2] == ["/bin/sh", "-c"] and cmd[2].startswith("exec ")
    echo = ["/bin/sh", "-c", "echo " + cmd[2].removeprefix("exec ")]
    shell = subprocess.run(echo, env={"SERVICE": env["SERVICE"]}, capture_output=True, text=True)
    assert shell.stdout.split() == ["python", "-m", f"services.{service}.app"]
    assert_installs_the_runtime_pins_only(steps)


def assert_installs_the_runtime_pins_only(steps: list[tuple[str, str]]) -> None:
    """Run the image's own requirement-extraction one-liner on pyproject.toml:
    the runtime pins, no extra (no tqdm, no supervisor), and nothing else
    installed."""
    run = next(rest for w, rest in steps if w == "RUN" and "tomllib" in rest)
    extract = run.split(" > /tmp/requirements.txt")[0]
    extract = extract.replace("python ", f"{sys.executable} ", 1)
    extract = extract.replace("/tmp/pyproject.toml", str(ROOT / "pyproject.toml"))
    # /bin/sh, as Docker runs RUN, so the quoting is tested too.
    result = subprocess.run(["/bin/sh", "-c", extract], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == pinned_dependencies()
    assert not {distribution(r) for r in result.stdout.split()} & {"tqdm", "supervisor"}
    installs = [rest for w, rest in steps if w == "RUN" and "pip install" in rest]
    assert installs == [run]
    pip = [part.strip() for part in re.findall(r"pip install [^&]*", run)]
    assert pip == ["pip install --no-compile -r /tmp/requirements.txt"]


def test_gateway_dockerfile_config_passes_nginx_t(tmp_path: Path) -> None:
    steps = instructions(ROOT / "gateway" / "Dockerfile")
    env = {k: v for k, v in env_of(steps).items() if "$" not in v}
    env.update({"GATEWAY_RATE_LIMIT": "on", "GATEWAY_RATE": "50", "GATEWAY_BURST": "100"})
    # Service DNS names do not resolve here; the rest is the image's config.
    for service in cfg.SERVICES:
        assert env[f"{service.upper()}_UPSTREAM"] == f"{service}:{cfg.BASE_PORTS[service]}"
        env[f"{service.upper()}_UPSTREAM"] = f"127.0.0.1:{cfg.BASE_PORTS[service]}"
    assert env["PHOTOS_UPSTREAM"] == "photos:8004" and env["PHOTOS_DIR"] == "/var/lib/runway/photos"
    env["PHOTOS_UPSTREAM"] = "127.0.0.1:8004"
    env["GATEWAY_PORT"] = "18080"  # nginx -t binds nothing, but keep off the real port
    config = render.GatewayConfig.from_env(tmp_path, env)
    render.write(config)
    result = render.check(config)
    assert result.returncode == 0, result.stderr
    assert env["GATEWAY_LISTEN_HOST"] == "0.0.0.0" and env["GATEWAY_STATUS_HOST"] == "127.0.0.1"
    final_stage = steps[[w for w, _ in steps].index("FROM", 1) :]
    assert ("USER", "nginx") in final_stage
    assert any(w == "HEALTHCHECK" for w, _ in final_stage)
    assert ("COPY", "gateway/openapi.json /usr/share/runway/openapi.json") in final_stage


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: the last pattern
    matching the path or one of its parent folders decides; `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = re.escape(pattern.removeprefix("!").strip("/"))
        regex = regex.replace(r"\*\*/", "(.*/)?").replace(r"/\*\*", "(/.*)?")
        regex = regex.replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_images_copy_and_no_data_tooling() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "**"  # everything excluded, then allow-listed
    sent = [
        "pyproject.toml",
        "services/__init__.py",
        "services/common/__init__.py",
        "services/common/settings.py",
        "gateway/openapi.json",
        "gateway/render.py",
    ]
    for service in cfg.SERVICES:
        sent += [f"services/{service}/app.py", f"services/{service}/migrations/001_schema.sql"]
    left_out = [
        "services/common/data/csv_parse.py",
        "services/common/data/__init__.py",
        "tests/conftest.py",
        "bench/run.py",
    ]
    for service in cfg.SERVICES:
        left_out += [f"services/{service}/data/loader.py", f"services/{service}/data/generator.py"]
    for path in sent:
        assert not dockerignored(path, patterns), path
    for path in left_out:
        assert dockerignored(path, patterns), path
    for path in [*sent, *left_out]:
        assert (ROOT / path).exists(), path
    assert dockerignored("services/common/__pycache__/app.cpython-311.pyc", patterns)
    # It is the data patterns that leave the tooling out (the allow-list alone sends it).
    allow_list = [p for p in patterns if "/data" not in p]
    assert not dockerignored("services/qa/data/loader.py", allow_list)
