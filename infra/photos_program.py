"""The local stack's photos service as supervisord programs (infra/stack.py
adds them, waits for them and prints their URL): PHOTOS_INSTANCES or
INSTANCES processes on PHOTOS_PORT + 100*i, all on the one local store
directory (data/photos; PHOTOS_DIR), which the gateway serves itself."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from infra.probe import http_status
from services.photos import settings as photos_cfg

ProgramFn = Callable[[str, str, dict[str, str], Path], str]


def programs(run_dir: Path, program_fn: ProgramFn) -> list[str]:
    directory = photos_cfg.store_dir()
    directory.mkdir(parents=True, exist_ok=True)
    sections = []
    for i, port in enumerate(photos_cfg.instance_ports()):
        env = {"PORT": str(port), "PYTHONUNBUFFERED": "1", "PHOTOS_DIR": str(directory)}
        command = f"{sys.executable} -m services.photos.app"
        sections.append(
            program_fn(f"photos-{i}", command, env, run_dir / "logs" / f"photos-{i}.log")
        )
    return sections


def wait_ready(timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    pending = [f"http://127.0.0.1:{p}/readyz" for p in photos_cfg.instance_ports()]
    while pending and time.monotonic() < deadline:
        pending = [url for url in pending if http_status(url) != 200]
        if pending:
            time.sleep(0.2)
    if pending:
        raise SystemExit(f"[stack] photos not ready after {timeout_s:.0f}s: {', '.join(pending)}")


def print_urls() -> None:
    for port in photos_cfg.instance_ports():
        print(f"  {'photos':9} http://127.0.0.1:{port}  (store: {photos_cfg.store_dir()})")
