"""Where the photos service and its store live in each deployment: the local
stack (supervisord programs on data/photos, which the gateway serves), compose
(a volume the photos service writes and the gateway mounts read-only) and
Kubernetes (an S3 bucket every pod shares, never a volume; the gateway caches)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import render
from infra import photos_program, stack
from services.photos import settings as photos_cfg
from tests.infra import test_compose, test_k8s


def test_stack_runs_every_photos_instance_on_the_one_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHOTOS_INSTANCES", "2")
    monkeypatch.setenv("PHOTOS_DIR", str(tmp_path / "store"))
    sections = photos_program.programs(tmp_path, stack._program)
    assert [s.split("]")[0].split(":")[1] for s in sections] == ["photos-0", "photos-1"]
    for section, port in zip(sections, (8004, 8104), strict=True):
        assert f'PORT="{port}"' in section and f'PHOTOS_DIR="{tmp_path / "store"}"' in section
        assert "-m services.photos.app" in section
    assert (tmp_path / "store").is_dir()
    gateway = render.GatewayConfig.from_env(tmp_path, {"PHOTOS_DIR": str(tmp_path / "store")})
    assert f"alias {tmp_path / 'store'}/;" in render.render(gateway)


def test_the_default_store_survives_make_clean() -> None:
    assert photos_cfg.store_dir({}) == photos_cfg.CHECKOUT / "data" / "photos"
    assert photos_cfg.store_dir({"RUNWAY_DATA_DIR": "/srv/d"}) == Path("/srv/d/photos")


def test_compose_photos_volume_is_written_by_photos_and_served_by_the_gateway() -> None:
    config = test_compose.load()
    services = config["services"]
    photos = services["photos"]
    assert photos["build"]["args"] == {"SERVICE": "photos", "PORT": str(photos_cfg.BASE_PORT)}
    assert photos["expose"] == [str(photos_cfg.BASE_PORT)]
    env = photos["environment"]
    assert env["PHOTOS_STORE"] == "local" and env["PORT"] == str(photos_cfg.BASE_PORT)
    assert photos["volumes"] == [f"photos:{env['PHOTOS_DIR']}"]
    assert services["gateway"]["volumes"] == [f"photos:{env['PHOTOS_DIR']}:ro"]
    assert services["gateway"]["depends_on"]["photos"] == {"condition": "service_healthy"}
    assert "photos" in config["volumes"]
    assert "8004/readyz" in " ".join(photos["healthcheck"]["test"])


def test_kubernetes_photos_use_s3_not_a_volume() -> None:
    deployment = test_k8s.find("Deployment", "photos")
    pod = deployment["spec"]["template"]["spec"]
    assert all("persistentVolumeClaim" not in v for v in pod.get("volumes", []))
    [container] = pod["containers"]
    assert container["ports"][0]["containerPort"] == photos_cfg.BASE_PORT
    config = test_k8s.find("ConfigMap", "runway-photos-config")["data"]
    assert config["PHOTOS_STORE"] == "s3" and config["S3_BUCKET"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "runway-photos-s3"
    assert test_k8s.find("Service", "photos")["spec"]["ports"][0]["port"] == photos_cfg.BASE_PORT
    assert test_k8s.find("HorizontalPodAutoscaler", "photos")["spec"]["minReplicas"] >= 2
    gateway = test_k8s.find("Deployment", "gateway")["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for c in gateway["containers"] for m in c.get("volumeMounts", [])}
    assert "/tmp/nginx/cache" in mounts  # the proxy_cache the S3-mode gateway keeps


def test_kubernetes_sweeps_unreferenced_photos_daily_with_the_photos_image() -> None:
    job = test_k8s.find("CronJob", "photos-sweep")["spec"]
    assert job["concurrencyPolicy"] == "Forbid"  # two sweeps never race
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"].split(":")[0] == "runway/photos"
    assert container["command"][:3] == ["python", "-m", "services.photos.sweep"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    # It reads both databases that may name a photo, and the bucket.
    assert env["REVIEWS_DATABASE_URL"]["key"] == "reviews-database-url"
    assert env["QA_DATABASE_URL"]["key"] == "qa-database-url"
    assert env["AWS_ACCESS_KEY_ID"]["name"] == "runway-photos-s3"
