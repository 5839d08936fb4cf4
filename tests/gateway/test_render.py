"""The rendered nginx.conf: generated from the settings, and `nginx -t` clean
in every mode the stack, the load tests and the containers use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway import render
from services.common import settings as cfg
from services.photos import settings as photos_cfg

MODES: dict[str, dict[str, str]] = {
    "defaults": {},
    "three instances each": {"INSTANCES": "3"},
    "per-service instances": {"REVIEWS_INSTANCES": "4", "QA_PORT": "9003"},
    "rate limit off": {"GATEWAY_RATE_LIMIT": "off"},
    "one worker per core": {"GATEWAY_WORKERS": "auto"},
    "containers": {
        "GATEWAY_LISTEN_HOST": "0.0.0.0",
        "OVERVIEW_UPSTREAM": "localhost:8001",
        "REVIEWS_UPSTREAM": "localhost:8002",
        "QA_UPSTREAM": "localhost:8003",
        "GATEWAY_ACCESS_LOG": "stdout",
        "GATEWAY_ERROR_LOG": "stderr",
        "FRONTEND_ORIGIN": "https://shop.example, http://localhost:3000",
    },
}


@pytest.mark.parametrize("mode", MODES)
def test_rendered_config_passes_nginx_t(mode: str, tmp_path: Path) -> None:
    config = render.GatewayConfig.from_env(tmp_path, MODES[mode])
    render.write(config)
    result = render.check(config)
    assert result.returncode == 0, result.stderr


def upstream_servers(text: str, service: str) -> list[str]:
    block = re.search(rf"upstream {service} \{{(.*?)\}}", text, re.S)
    assert block, service
    return re.findall(r"server (\S+) max_fails", block.group(1))


@pytest.mark.parametrize("mode", ["defaults", "three instances each", "per-service instances"])
def test_upstreams_come_from_the_settings(mode: str, tmp_path: Path) -> None:
    env = MODES[mode]
    text = render.render(render.GatewayConfig.from_env(tmp_path, env))
    for service in cfg.SERVICES:
        expected = [f"127.0.0.1:{p}" for p in cfg.instance_ports(service, env)]
        assert upstream_servers(text, service) == expected
    expected = [f"127.0.0.1:{p}" for p in photos_cfg.instance_ports(env)]
    assert upstream_servers(text, "photos") == expected
    assert f"listen 127.0.0.1:{cfg.gateway_port(env)} " in text
    assert f"listen 127.0.0.1:{cfg.gateway_status_port(env)};" in text


def test_upstream_override_and_listen_host(tmp_path: Path) -> None:
    text = render.render(render.GatewayConfig.from_env(tmp_path, MODES["containers"]))
    assert upstream_servers(text, "reviews") == ["localhost:8002"]
    assert "listen 0.0.0.0:8080 " in text
    assert "access_log /dev/stdout runway_json;" in text


def test_rate_limit_settings_are_rendered(tmp_path: Path) -> None:
    env = {"GATEWAY_RATE": "7", "GATEWAY_BURST": "11", "GATEWAY_CONN_LIMIT": "13"}
    text = render.render(render.GatewayConfig.from_env(tmp_path, env))
    assert "rate=7r/s" in text and "burst=11 nodelay" in text
    assert "limit_conn conn_per_client 13;" in text
    off = render.render(render.GatewayConfig.from_env(tmp_path, {"GATEWAY_RATE_LIMIT": "off"}))
    assert "limit_req " not in off and "limit_conn " not in off


@pytest.mark.parametrize(("value", "rendered"), [(None, "1"), ("3", "3"), ("AUTO", "auto")])
def test_worker_processes(value: str | None, rendered: str, tmp_path: Path) -> None:
    env = {} if value is None else {"GATEWAY_WORKERS": value}
    text = render.render(render.GatewayConfig.from_env(tmp_path, env))
    assert re.search(rf"^worker_processes {rendered};", text, re.M)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_worker_processes_is_refused(value: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="GATEWAY_WORKERS"):
        render.GatewayConfig.from_env(tmp_path, {"GATEWAY_WORKERS": value})


def test_keepalive_and_retry_directives(tmp_path: Path) -> None:
    text = render.render(render.GatewayConfig.from_env(tmp_path, {}))
    assert text.count("keepalive 128;") == len(render.UPSTREAMS)  # the services and photos
    assert "proxy_http_version 1.1;" in text and 'proxy_set_header Connection "";' in text
    assert "proxy_next_upstream error timeout;" in text
    assert not re.search(r"proxy_next_upstream [^;]*non_idempotent", text)
    assert "server_tokens off;" in text


@pytest.mark.parametrize("origin", ['http://x" ; evil', "javascript:alert(1)", "http://a b"])
def test_unsafe_frontend_origin_is_refused(origin: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        render.GatewayConfig.from_env(tmp_path, {"FRONTEND_ORIGIN": origin})


def test_every_gateway_error_page_is_json(tmp_path: Path) -> None:
    text = render.render(render.GatewayConfig.from_env(tmp_path, {}))
    for status in (404, 413, 429, 502, 503, 504):
        assert f"error_page {status} ={status} /_error/{status};" in text
        assert re.search(rf"return {status} '\{{\"error\": \"[^\"]+\"\}}';", text)


def test_photos_local_store_is_served_by_nginx_and_s3_through_a_cache(tmp_path: Path) -> None:
    env = {"PHOTOS_DIR": str(tmp_path / "store"), "PHOTOS_UPLOAD_RATE": "20"}
    local = render.render(render.GatewayConfig.from_env(tmp_path, env))
    photos = re.search(r"location /photos/ \{(.*?)\n        \}", local, re.S).group(1)
    assert f"alias {tmp_path / 'store'}/;" in photos and "try_files $uri @photo_missing;" in photos
    assert "proxy_pass" not in photos and "proxy_cache_path" not in local
    upload = re.search(r"location = /photos \{(.*?)\}", local, re.S).group(1)
    assert "client_max_body_size 10m;" in upload and "proxy_pass http://photos;" in upload
    assert "limit_req zone=photo_uploads burst=19 nodelay;" in upload
    assert "limit_req zone=per_client" in upload  # a location's own limit_req drops the server's
    assert "zone=photo_uploads:10m rate=20r/m;" in local
    s3 = render.render(render.GatewayConfig.from_env(tmp_path, {**env, "PHOTOS_STORE": "s3"}))
    photos = re.search(r"location /photos/ \{(.*?)\n        \}", s3, re.S).group(1)
    assert "proxy_pass http://photos;" in photos and "proxy_cache photos;" in photos
    assert "alias" not in photos and "keys_zone=photos:10m" in s3
