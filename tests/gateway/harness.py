"""Processes the gateway tests start for real: nginx on a rendered config, and
service instances as `python -m services.<svc>.app` subprocesses (as the stack
runs them), all on free ports. Also a tiny HTTP client that keeps the raw
status, headers and body (the tests check what nginx itself sends)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway import render
from services.common import settings as cfg
from tests.conftest import ROOT, free_port


def free_instance_base(instances: int) -> int:
    """A base port whose every instance port (base + 100*i) is free and handed
    out to no other server of this session."""
    step = cfg.INSTANCE_PORT_STEP
    return free_port(span=step * (instances - 1), step=step)


def wait_http(url: str, timeout_s: float = 20, want: int = 200) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            import urllib.request

            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == want:
                    return
                last = resp.status
        except Exception as exc:  # not up yet: connection refused, 503, ...
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer {want} within {timeout_s}s (last: {last!r})")


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


@dataclass
class ServiceInstance:
    """One service process on one port; it can be killed and started again."""

    service: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        env = {**os.environ, **self.env, "PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.service}.app"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        try:
            wait_http(f"http://127.0.0.1:{self.port}/readyz")
        except RuntimeError as exc:
            self.stop()
            log = self.log_path.read_text()
            raise RuntimeError(f"{self.service}:{self.port} failed:\n{log}") from exc

    def kill(self) -> None:
        """SIGKILL: no graceful close, as a crash would leave it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@dataclass
class Gateway:
    """nginx on a config rendered from `env` into `run_dir`."""

    run_dir: Path
    env: dict[str, str]
    config: render.GatewayConfig = field(init=False)
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.config = render.GatewayConfig.from_env(self.run_dir, self.env)

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def access_log(self) -> Path:
        return Path(self.config.access_log)

    def start(self) -> None:
        render.write(self.config)
        checked = render.check(self.config)
        assert checked.returncode == 0, checked.stderr
        self.process = subprocess.Popen(
            render.nginx_command(self.config, "-g", "daemon off;"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"http://127.0.0.1:{self.config.status_port}/healthz", timeout_s=10)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: flushes the access log
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def gateway_env(upstream_ports: Mapping[str, int], instances: int, **extra: str) -> dict[str, str]:
    """Settings env for a gateway on free ports in front of the given base ports."""
    env = {
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_STATUS_PORT": str(free_port()),
        "INSTANCES": str(instances),
    }
    for service, port in upstream_ports.items():
        env[f"{service.upper()}_PORT"] = str(port)
    env.update(extra)
    return env
