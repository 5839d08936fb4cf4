"""Render the gateway's nginx.conf from services/common/settings.py (ports and
instance counts, the one source of truth) and the environment:

    GATEWAY_PORT / GATEWAY_STATUS_PORT    public and status ports (settings.py)
    GATEWAY_LISTEN_HOST                   public bind address (127.0.0.1)
    GATEWAY_STATUS_HOST                   status bind address (127.0.0.1)
    GATEWAY_RATE_LIMIT                    "off" disables rate and connection limits
    GATEWAY_RATE / GATEWAY_BURST          per-client requests per second (50) and burst (100)
    GATEWAY_CONN_LIMIT                    concurrent connections per client (100)
    FRONTEND_ORIGIN                       CORS origin(s), comma-separated (http://localhost:3000)
    <SERVICE>_UPSTREAM                    "host:port,host:port" instead of 127.0.0.1 instance ports
                                          (compose and Kubernetes use the service's DNS name)
    GATEWAY_ACCESS_LOG / GATEWAY_ERROR_LOG  log paths ("stdout"/"stderr" for containers, "off")
    GATEWAY_OPENAPI_DIR                   directory holding openapi.json (gateway/)
    GATEWAY_WORKER_USER                   workers' user when started as root (nobody nogroup),
                                          "none" to omit it (an image that runs as non-root)
    GATEWAY_WORKERS                       nginx worker processes: a number or "auto" (1)
    PHOTOS_STORE / PHOTOS_DIR             photos served from that directory ("local") or
                                          through the photos service with proxy_cache ("s3")
                                          (services/photos/settings.py)
    PHOTOS_UPLOAD_RATE                    uploads per client per minute (20)
    GATEWAY_RESOLVER                      DNS server(s) nginx re-resolves the upstream names with
                                          (every 5 s; `server ... resolve`, nginx >= 1.27.3):
                                          Kubernetes' headless Services (gateway/README.md)
    GATEWAY_TRUSTED_PROXIES               CIDRs (comma-separated) of load balancers allowed
                                          to name the client in X-Forwarded-For (none)

    python -m gateway.render --run-dir run [--check]
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common import settings as cfg
from services.photos import settings as photos_cfg

GATEWAY_DIR = Path(__file__).resolve().parent
TEMPLATE = GATEWAY_DIR / "nginx.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TEMP_DIRS = ("body", "proxy", "fastcgi", "uwsgi", "scgi")
# The upstreams, each a service's instances: the three API services and photos.
UPSTREAMS = (*cfg.SERVICES, photos_cfg.SERVICE)

# Every error nginx itself produces answers in the contract's shape. Upstream
# errors (a service's own JSON 404 or 503) pass through untouched, because
# proxy_intercept_errors stays off.
ERROR_MESSAGES: dict[int, str] = {
    400: "bad request",
    403: "forbidden",
    404: "not found: no public route for this path",
    405: "method not allowed",
    408: "request timed out",
    413: "request body is larger than the limit (1 MiB; 10 MiB for POST /photos)",
    414: "request URI is too long",
    429: "too many requests: rate limit exceeded, retry later",
    494: "request header is too large",
    500: "gateway internal error",
    502: "upstream service unavailable",
    503: "service temporarily unavailable",
    504: "upstream service timed out",
}
# nginx reports an oversized header internally as 494 but sends 400.
WIRE_STATUS = {494: 400}


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    run_dir: Path
    listen_host: str
    port: int
    status_host: str
    status_port: int
    upstreams: dict[str, list[str]]
    rate_limit: bool
    rate_per_s: int
    burst: int
    conn_limit: int
    origins: list[str]
    access_log: str
    error_log: str
    openapi_dir: Path
    worker_user: str
    workers: str
    photos_store: str = "local"
    photos_dir: Path = photos_cfg.DEFAULT_DIR
    upload_rate_per_min: int = 20
    trusted_proxies: tuple[str, ...] = ()
    resolver: str = ""

    @classmethod
    def from_env(
        cls, run_dir: Path, env: Mapping[str, str] = os.environ, logs: Path | None = None
    ) -> GatewayConfig:
        logs = logs or run_dir / "logs"
        return cls(
            run_dir=run_dir,
            listen_host=env.get("GATEWAY_LISTEN_HOST", "127.0.0.1"),
            port=cfg.gateway_port(env),
            status_host=env.get("GATEWAY_STATUS_HOST", "127.0.0.1"),
            status_port=cfg.gateway_status_port(env),
            upstreams={s: upstream_servers(s, env) for s in UPSTREAMS},
            rate_limit=env.get("GATEWAY_RATE_LIMIT", "on").lower() not in ("off", "0", "no"),
            rate_per_s=_positive(env, "GATEWAY_RATE", 50),
            burst=_positive(env, "GATEWAY_BURST", 100),
            conn_limit=_positive(env, "GATEWAY_CONN_LIMIT", 100),
            origins=_origins(env.get("FRONTEND_ORIGIN", "http://localhost:3000")),
            access_log=env.get("GATEWAY_ACCESS_LOG", str(logs / "gateway-access.log")),
            error_log=env.get("GATEWAY_ERROR_LOG", str(logs / "gateway-error.log")),
            openapi_dir=Path(env.get("GATEWAY_OPENAPI_DIR", str(GATEWAY_DIR))),
            worker_user=env.get("GATEWAY_WORKER_USER", "nobody nogroup"),
            workers=worker_processes(env),
            photos_store=photos_cfg.store_kind(env),
            photos_dir=photos_cfg.store_dir(env),
            upload_rate_per_min=_positive(env, "PHOTOS_UPLOAD_RATE", 20),
            trusted_proxies=trusted_proxies(env.get("GATEWAY_TRUSTED_PROXIES", "")),
            resolver=env.get("GATEWAY_RESOLVER", "").strip(),
        )

    @property
    def conf_path(self) -> Path:
        return self.run_dir / "nginx.conf"


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"setting {name} must be a positive integer, got {raw!r}")
    return int(raw)


def worker_processes(env: Mapping[str, str] = os.environ) -> str:
    """nginx's worker_processes. One by default: a worker proxies tens of thousands
    of requests a second, more than the services behind it answer, and where
    nginx shares the cores with them (this stack) a second worker only splits
    the same requests into smaller, costlier batches: under the benchmark's W1,
    24 us of nginx CPU per request with two workers, 21 with one, at the same
    throughput (docs/decisions/0008-one-gateway-worker.md). "auto" counts the machine's cores,
    not a container's CPU limit: in a container, give a number."""
    raw = (env.get("GATEWAY_WORKERS") or "1").strip().lower()
    if raw != "auto" and (not raw.isdigit() or int(raw) < 1):
        raise SystemExit(f"setting GATEWAY_WORKERS must be a positive integer or auto, got {raw!r}")
    return raw


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")


def _origins(raw: str) -> list[str]:
    origins = [o.strip().rstrip("/") for o in raw.split(",") if o.strip()]
    for origin in origins:
        # An origin lands inside a quoted nginx map key: accept only scheme://host[:port].
        if not _ORIGIN.match(origin):
            raise SystemExit(f"FRONTEND_ORIGIN entry {origin!r} is not scheme://host[:port]")
    return origins


def upstream_servers(service: str, env: Mapping[str, str] = os.environ) -> list[str]:
    """host:port of every instance: <SERVICE>_UPSTREAM, else 127.0.0.1 on instance_ports."""
    override = env.get(f"{service.upper()}_UPSTREAM", "")
    if override.strip():
        return [s.strip() for s in override.split(",") if s.strip()]
    if service == photos_cfg.SERVICE:
        return [f"127.0.0.1:{port}" for port in photos_cfg.instance_ports(env)]
    return [f"127.0.0.1:{port}" for port in cfg.instance_ports(service, env)]


def _log_target(value: str, kind: str) -> str:
    """An access_log / error_log argument; container logs go to /dev/stdout or stderr."""
    if value == "off":
        return "off" if kind == "access" else "stderr"
    if value in ("stdout", "stderr"):
        return f"/dev/{value} runway_json" if kind == "access" else value
    # A file: buffer access-log writes instead of one write(2) per request.
    return f"{value} runway_json buffer=32k flush=1s" if kind == "access" else value


def _upstream_block(service: str, servers: list[str], resolve: bool = False) -> str:
    # Passive health: after 2 failures an instance rests 5 s (ignored by nginx
    # when it is the only one, which is what a single instance should do).
    # `resolve`: the name's addresses (a headless Service's pods) are looked up
    # again as the resolver's TTL (valid=5s) expires, kept in the shared zone.
    lines = [f"    upstream {service} {{", f"        zone upstream_{service} 64k;"]
    flag = " resolve" if resolve else ""
    lines += [f"        server {s} max_fails=2 fail_timeout=5s{flag};" for s in servers]
    lines += [
        # Idle connections kept per worker: above the most requests a worker has
        # in flight to one service. With 32, bursts past it opened a connection
        # and closed it after one request: ~450 new connections a second under
        # W1, each a TCP handshake and a fresh aiohttp protocol in the service.
        "        keepalive 128;",
        # Below aiohttp's 75 s keep-alive so nginx, not the service, closes idle
        # connections (no request races a close).
        "        keepalive_timeout 60s;",
        "        keepalive_requests 10000;",
        "    }",
    ]
    return "\n".join(lines)


def _error_pages() -> str:
    # URI locations, not named ones: a request nginx refuses while reading its
    # request line (a NUL in the path) has no URI, and cannot be redirected to
    # a named location (nginx would answer its own HTML 500 instead).
    lines = []
    for status in ERROR_MESSAGES:
        wire = WIRE_STATUS.get(status, status)
        lines.append(f"        error_page {status} ={wire} /_error/{status};")
    for status, message in ERROR_MESSAGES.items():
        wire = WIRE_STATUS.get(status, status)
        lines += [
            f"        location = /_error/{status} {{",
            "            internal;",
            f'            return {wire} \'{{"error": "{message}"}}\';',
            "        }",
        ]
    return "\n".join(lines)


def _rate_limit_zones(c: GatewayConfig) -> str:
    if not c.rate_limit:
        return "    # rate limiting is off (GATEWAY_RATE_LIMIT=off)"
    return "\n".join(
        [
            f"    limit_req_zone $binary_remote_addr zone=per_client:10m rate={c.rate_per_s}r/s;",
            "    limit_conn_zone $binary_remote_addr zone=conn_per_client:10m;",
            "    limit_req_status 429;",
            "    limit_conn_status 429;",
            "    limit_req_log_level warn;",
            # Uploads: at most PHOTOS_UPLOAD_RATE a minute per client (a burst of
            # that many, then one per 60/rate seconds), beside the general limit.
            f"    limit_req_zone $binary_remote_addr zone=photo_uploads:10m"
            f" rate={c.upload_rate_per_min}r/m;",
        ]
    )


def _rate_limit(c: GatewayConfig) -> str:
    if not c.rate_limit:
        return "        # rate limiting is off (GATEWAY_RATE_LIMIT=off)"
    return "\n".join(
        [
            f"        limit_req zone=per_client burst={c.burst} nodelay;",
            f"        limit_conn conn_per_client {c.conn_limit};",
        ]
    )


def _upload_limit(c: GatewayConfig) -> str:
    if not c.rate_limit:
        return "            # rate limiting is off (GATEWAY_RATE_LIMIT=off)"
    # A location with a limit_req of its own inherits none: the general one again.
    return "\n".join(
        [
            f"            limit_req zone=photo_uploads burst={c.upload_rate_per_min - 1} nodelay;",
            f"            limit_req zone=per_client burst={c.burst} nodelay;",
        ]
    )


def _photos_cache_path(c: GatewayConfig) -> str:
    if c.photos_store != "s3":
        return "    # photos are files on this host (PHOTOS_STORE=local): no proxy cache"
    return (
        f"    proxy_cache_path {c.run_dir}/cache/photos levels=1:2 keys_zone=photos:10m"
        " max_size=1g inactive=30d use_temp_path=off;"
    )


def _photos_serving(c: GatewayConfig) -> str:
    """GET/HEAD /photos/<name>: the local store's files by nginx itself, or the
    photos service's answers (from the bucket) through a cache."""
    if c.photos_store == "s3":
        lines = [
            "            proxy_pass http://photos;",
            # Content-addressed: a name's bytes never change, so cache long; a
            # miss is fetched once however many ask at the same time.
            "            proxy_cache photos;",
            "            proxy_cache_valid 200 30d;",
            "            proxy_cache_valid 404 10s;",
            "            proxy_cache_lock on;",
            "            proxy_cache_use_stale error timeout updating http_502 http_503 http_504;",
            "            proxy_max_temp_file_size 32m;",
        ]
    else:
        lines = [
            f"            alias {c.photos_dir}/;",
            "            try_files $uri @photo_missing;",
            "            types {",
            "                image/jpeg jpg;",
            "                image/webp webp;",
            "            }",
            "            default_type application/octet-stream;",
            "            sendfile on;",
            "            tcp_nopush on;",
            # Stored files never change (content-addressed): their descriptors can be kept.
            "            open_file_cache max=10000 inactive=60s;",
            "            open_file_cache_valid 300s;",
            "            open_file_cache_errors off;",
            # The store's work directory (.incoming) and any other dot name.
            "            location ~ /\\. {",
            "                return 404;",
            "            }",
        ]
    return "\n".join(lines)


def trusted_proxies(raw: str) -> tuple[str, ...]:
    """GATEWAY_TRUSTED_PROXIES as normalised CIDRs; a bad one stops the render."""
    result = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            result.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError as exc:
            raise SystemExit(f"GATEWAY_TRUSTED_PROXIES: {item!r} is not a CIDR ({exc})") from exc
    return tuple(result)


def _real_ip(c: GatewayConfig) -> str:
    """The realip module, only behind trusted load balancers: $remote_addr (and so
    the rate-limit keys and the access log) becomes the last address in
    X-Forwarded-For that is not a trusted proxy. Any other peer's
    X-Forwarded-For is ignored, so a client cannot pick its own bucket."""
    if not c.trusted_proxies:
        return "    # no trusted proxies (GATEWAY_TRUSTED_PROXIES): the peer is the client"
    lines = [f"    set_real_ip_from {cidr};" for cidr in c.trusted_proxies]
    lines += ["    real_ip_header X-Forwarded-For;", "    real_ip_recursive on;"]
    return "\n".join(lines)


def _resolver(c: GatewayConfig) -> str:
    if not c.resolver:
        return "    # upstream names resolved once, at start (no GATEWAY_RESOLVER)"
    return "\n".join(
        [
            # Re-resolved every 5 s whatever the record's TTL: a scale-out is
            # balanced over within seconds, a removed pod leaves as fast.
            f"    resolver {c.resolver} valid=5s ipv6=off;",
            "    resolver_timeout 2s;",
        ]
    )


def _user_directive(c: GatewayConfig) -> str:
    # Started as root (the dev box, CI), nginx drops its workers to an
    # unprivileged user; they only read files and never write temp files.
    if c.worker_user == "none" or os.geteuid() != 0:
        return "# not started as root: workers run as the master's user"
    return f"user {c.worker_user};"


def render(c: GatewayConfig) -> str:
    values = {
        "user": _user_directive(c),
        "workers": c.workers,
        "run_dir": str(c.run_dir),
        "error_log": _log_target(c.error_log, "error"),
        "access_log": _log_target(c.access_log, "access"),
        "cors_origins": "\n".join(f'        "{o}" $http_origin;' for o in c.origins),
        "retry_after": str(max(1, math.ceil(1 / c.rate_per_s))),
        "rate_limit_zones": _rate_limit_zones(c),
        "rate_limit": _rate_limit(c),
        "upstreams": "\n\n".join(
            _upstream_block(s, c.upstreams[s], bool(c.resolver)) for s in UPSTREAMS
        ),
        "resolver": _resolver(c),
        "listen_host": c.listen_host,
        "gateway_port": str(c.port),
        "status_host": c.status_host,
        "status_port": str(c.status_port),
        "next_upstream_tries": str(max(2, *(len(v) for v in c.upstreams.values()))),
        "error_pages": _error_pages(),
        "openapi_dir": str(c.openapi_dir),
        "upload_limit": _upload_limit(c),
        "photos_cache_path": _photos_cache_path(c),
        "photos_serving": _photos_serving(c),
        "real_ip": _real_ip(c),
    }
    text = TEMPLATE.read_text()
    missing = set(re.findall(r"\{\{(\w+)\}\}", text)) - values.keys()
    if missing:
        raise ValueError(f"template placeholders without a value: {sorted(missing)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)


def write(c: GatewayConfig) -> Path:
    """Write nginx.conf and the directories it names under the run directory."""
    for name in TEMP_DIRS:
        (c.run_dir / "tmp" / name).mkdir(parents=True, exist_ok=True)
    if c.photos_store == "s3":
        (c.run_dir / "cache" / "photos").mkdir(parents=True, exist_ok=True)
    for log in (c.access_log, c.error_log):
        if log.startswith("/") and not log.startswith("/dev/"):
            Path(log).parent.mkdir(parents=True, exist_ok=True)
    c.conf_path.write_text(render(c))
    return c.conf_path


def nginx_command(c: GatewayConfig, *extra: str) -> list[str]:
    """nginx on the rendered config, its early error log under the run directory."""
    return [NGINX, "-p", str(c.run_dir), "-c", str(c.conf_path), "-e", _early_log(c), *extra]


def _early_log(c: GatewayConfig) -> str:
    if c.error_log in ("stdout", "stderr", "off"):
        return "stderr"
    return c.error_log


def check(c: GatewayConfig) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the rendered config."""
    return subprocess.run(nginx_command(c, "-t", "-q"), capture_output=True, text=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--run-dir", type=Path, default=Path("run") / "gateway")
    parser.add_argument("--check", action="store_true", help="run nginx -t on the result")
    args = parser.parse_args(argv)
    config = GatewayConfig.from_env(args.run_dir.resolve())
    print(write(config))
    if args.check:
        result = check(config)
        if result.returncode != 0:
            sys.exit(result.stderr)


if __name__ == "__main__":
    main()
