"""The local stack's NGINX gateway and Prometheus as supervisord programs
(infra/stack.py adds them to its config, waits for them and prints their URLs).

Both configs are rendered into the run directory from services/common/settings.py
and the environment, so ports and instance counts come from one place:
GATEWAY_PORT, GATEWAY_STATUS_PORT, <SERVICE>_PORT, <SERVICE>_INSTANCES or
INSTANCES, PROMETHEUS_PORT (9090; "off" skips Prometheus and the exporters). The exporters of
infra/exporters.py run beside them (ports NGINX_EXPORTER_PORT, REDIS_EXPORTER_PORT,
POSTGRES_EXPORTER_PORT) as Prometheus's jobs nginx, redis and postgres."""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway import render
from infra import exporters
from infra.probe import http_status
from services.common import settings as cfg
from services.photos import settings as photos_cfg

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "infra" / "prometheus"
GRAFANA_DASHBOARD = ROOT / "infra" / "grafana" / "runway-dashboard.json"

ProgramFn = Callable[[str, str, dict[str, str], Path], str]


def prometheus_port(env: Mapping[str, str] = os.environ) -> int | None:
    raw = env.get("PROMETHEUS_PORT", "9090")
    return None if raw == "off" else int(raw)


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )


# --- Prometheus ----------------------------------------------------------------


def prometheus_config(port: int, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The checked-in config with the local instance ports as targets."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    # Rule paths are relative to the config file; the copy lives elsewhere.
    config["rule_files"] = [str(PROMETHEUS_DIR / p) for p in config.get("rule_files", [])]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in cfg.SERVICES:
            targets = [f"127.0.0.1:{p}" for p in cfg.instance_ports(job["job_name"], env)]
            job["static_configs"] = [{"targets": targets}]
        elif job["job_name"] == photos_cfg.SERVICE:
            targets = [f"127.0.0.1:{p}" for p in photos_cfg.instance_ports(env)]
            job["static_configs"] = [{"targets": targets}]
        elif job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        elif job["job_name"] in exporters.JOBS:
            job["static_configs"] = [{"targets": exporters.targets(env)[job["job_name"]]}]
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def write_prometheus_config(run_dir: Path, port: int) -> Path:
    path = run_dir / "prometheus" / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(prometheus_config(port), sort_keys=False))
    return path


def prometheus_command(binary: str, config: Path, run_dir: Path, port: int) -> str:
    return shlex.join(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={run_dir / 'prometheus' / 'data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address=127.0.0.1:{port}",
            # The latency histograms' exemplars (trace ids, when the services trace).
            "--enable-feature=exemplar-storage",
        ]
    )


# --- NGINX -----------------------------------------------------------------------


def gateway_config(run_dir: Path) -> render.GatewayConfig:
    # nginx's own files under run/gateway, its logs beside the services' in run/logs.
    return render.GatewayConfig.from_env(run_dir / "gateway", logs=run_dir / "logs")


def nginx_program_command(gateway: render.GatewayConfig) -> str:
    # `nginx -t` before every start, so a broken config fails in the log with
    # nginx's own message instead of a crash loop; `daemon off` keeps nginx
    # in the foreground under supervisord.
    test = shlex.join(render.nginx_command(gateway, "-t", "-q"))
    serve = shlex.join(render.nginx_command(gateway, "-g", "daemon off;"))
    return shlex.join(["/bin/sh", "-c", f"{test} && exec {serve}"])


def programs(run_dir: Path, program_fn: ProgramFn) -> list[str]:
    """supervisord program sections for nginx and Prometheus."""
    logs = run_dir / "logs"
    gateway = gateway_config(run_dir)
    render.write(gateway)
    result = render.check(gateway)
    if result.returncode != 0:
        raise SystemExit(f"[stack] nginx -t failed on {gateway.conf_path}:\n{result.stderr}")
    sections = [program_fn("gateway", nginx_program_command(gateway), {}, logs / "gateway.log")]
    port = prometheus_port()
    binary = prometheus_binary()
    if port is None:  # PROMETHEUS_PORT=off (the benchmark): nothing to scrape the exporters
        return sections
    # The nginx, redis and postgres exporters (infra/exporters.py), scraped below.
    sections += exporters.programs(run_dir, program_fn)
    if binary is None:
        print("[stack] prometheus not installed (make deps installs it): not monitoring")
        return sections
    config = write_prometheus_config(run_dir, port)
    command = prometheus_command(binary, config, run_dir, port)
    sections.append(program_fn("prometheus", command, {}, logs / "prometheus.log"))
    return sections


# --- readiness and URLs -------------------------------------------------------------


def _wait(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http_status(url) == 200:
            return True
        time.sleep(0.2)
    return False


def wait_ready(timeout_s: float = 30) -> None:
    """The gateway answers (its own document, then a route through it)."""
    base = f"http://127.0.0.1:{cfg.gateway_port()}"
    if not _wait(f"{base}/openapi.json", timeout_s):
        log = "run/logs/gateway.log"
        raise SystemExit(f"[stack] the gateway does not answer on {base} (see {log})")
    port = prometheus_port()
    if port is not None and prometheus_binary() is not None:
        if not _wait(f"http://127.0.0.1:{port}/-/ready", timeout_s):
            print(f"[stack] warning: prometheus not ready on 127.0.0.1:{port}")


def print_urls() -> None:
    port = cfg.gateway_port()
    print(f"  gateway   http://127.0.0.1:{port}  (the public API)")
    print(f"  openapi   http://127.0.0.1:{port}/openapi.json")
    print(f"  status    http://127.0.0.1:{cfg.gateway_status_port()}/nginx_status  (internal)")
    prom = prometheus_port()
    if prom is not None and prometheus_binary() is not None:
        print(f"  metrics   http://127.0.0.1:{prom}  (Prometheus; alerts at /alerts)")
    print(f"  dashboard {GRAFANA_DASHBOARD}  (import into Grafana)")
