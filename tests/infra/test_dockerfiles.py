"""The Dockerfiles, checked statically (no Docker daemon here): slim base,
non-root user, a health check, only the service's own code plus common, pinned
dependencies from pyproject.toml; the gateway image's config passes `nginx -t`."""

from __future__ import annotations

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


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in steps:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def pinned_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_runtime_dependencies_are_pinned() -> None:
    for dep in pinned_dependencies():
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", dep), dep


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_service_dockerfile(service: str, tmp_path: Path) -> None:
    steps = instructions(ROOT / "services" / service / "Dockerfile")
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
    assert next(rest for w, rest in steps if w == "CMD") == (
        f'["python", "-m", "services.{service}.app"]'
    )
    assert_installs_the_pins(steps, tmp_path)


def assert_installs_the_pins(steps: list[tuple[str, str]], tmp_path: Path) -> None:
    """Run the image's own requirement-extraction one-liner on pyproject.toml."""
    run = next(rest for w, rest in steps if w == "RUN" and "tomllib" in rest)
    extract = run.split(" > /tmp/requirements.txt")[0]
    extract = extract.replace("python ", f"{sys.executable} ", 1)
    extract = extract.replace("/tmp/pyproject.toml", str(ROOT / "pyproject.toml"))
    # /bin/sh, as Docker runs RUN, so the quoting is tested too.
    result = subprocess.run(["/bin/sh", "-c", extract], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == pinned_dependencies()
    assert "pip install --no-compile -r /tmp/requirements.txt" in run


def test_gateway_dockerfile_config_passes_nginx_t(tmp_path: Path) -> None:
    steps = instructions(ROOT / "gateway" / "Dockerfile")
    env = {k: v for k, v in env_of(steps).items() if "$" not in v}
    env.update({"GATEWAY_RATE_LIMIT": "on", "GATEWAY_RATE": "50", "GATEWAY_BURST": "100"})
    # Service DNS names do not resolve here; the rest is the image's config.
    for service in cfg.SERVICES:
        assert env[f"{service.upper()}_UPSTREAM"] == f"{service}:{cfg.BASE_PORTS[service]}"
        env[f"{service.upper()}_UPSTREAM"] = f"127.0.0.1:{cfg.BASE_PORTS[service]}"
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


def test_dockerignore_sends_what_the_images_copy() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[0] != "**" or "**" in ignore  # everything excluded, then allow-listed
    for needed in ("pyproject.toml", "services/common/**", "gateway/openapi.json"):
        assert f"!{needed}" in ignore
