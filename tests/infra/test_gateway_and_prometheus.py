"""infra/gateway_and_prometheus.py, the stack's gateway and Prometheus
programs: rendered from the settings, `nginx -t` before nginx starts,
everything under the run dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import render
from infra import gateway_and_prometheus


def fake_program(name: str, command: str, env: dict[str, str], log: Path) -> str:
    return f"[program:{name}]\ncommand={command}\nlog={log}\n"


def test_programs_render_configs_under_the_run_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PROMETHEUS_PORT", "19999")
    monkeypatch.setenv("GATEWAY_PORT", "18888")
    sections = gateway_and_prometheus.programs(tmp_path, fake_program)
    assert [s.splitlines()[0] for s in sections] == [
        "[program:gateway]",
        "[program:nginx-exporter]",
        "[program:redis-exporter]",
        "[program:postgres-exporter]",
        "[program:prometheus]",
    ]
    gateway, prometheus = sections[0], sections[-1]
    conf = tmp_path / "gateway" / "nginx.conf"
    assert "listen 127.0.0.1:18888 " in conf.read_text()
    assert f"-c {conf} -e {tmp_path / 'logs' / 'gateway-error.log'} -t -q &&" in gateway
    assert f"exec {render.NGINX}" in gateway and "daemon off;" in gateway
    assert "--web.listen-address=127.0.0.1:19999" in prometheus
    assert (tmp_path / "prometheus" / "prometheus.yml").exists()
    assert str(tmp_path / "prometheus" / "data") in prometheus


def test_prometheus_can_be_left_out(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PROMETHEUS_PORT", "off")
    names = [s.splitlines()[0] for s in gateway_and_prometheus.programs(tmp_path, fake_program)]
    assert names == ["[program:gateway]"]  # nor the exporters, which only it scrapes


def test_a_broken_gateway_config_stops_the_stack(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REVIEWS_UPSTREAM", "no-such-host.invalid:1")
    with pytest.raises(SystemExit, match="nginx -t failed"):
        gateway_and_prometheus.programs(tmp_path, fake_program)
