"""The S3-compatible store against a real S3 endpoint process (moto_server,
from moto[server]) and the gateway's S3 mode: uploads land in the bucket,
nginx serves them through the photos service and keeps them in its
proxy_cache, so a hot photo is served even with no photos instance up."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.conftest import free_port
from tests.gateway.harness import Gateway, ServiceInstance, request, wait_http
from tests.photos import images
from tests.photos.conftest import remove_tree, store_directory
from tests.photos.test_uploads import IMMUTABLE, assert_json_error, path_of, upload

BUCKET = "runway-photos-test"
MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MOTO_SERVER.exists() and shutil.which("moto_server") is None:
        pytest.fail("moto_server missing: pip install -e '.[dev]'")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", timeout_s=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "S3_REGION": "us-east-1"}


def bucket_keys(endpoint: str) -> set[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_credentials())
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def _credentials() -> dict[str, str]:
    return {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


@pytest.fixture(scope="module")
def s3_stack(
    s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceInstance, Gateway]]:
    boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", **_credentials()
    ).create_bucket(Bucket=BUCKET)
    gateway_port = free_port()
    env = {
        **S3_ENV,
        "PHOTOS_STORE": "s3",
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": s3_endpoint,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{gateway_port}",
    }
    logs = tmp_path_factory.mktemp("s3-photos")
    instance = ServiceInstance("photos", free_port(), env, logs / "photos.log")
    # Not under pytest's tmp_path (mode 700): nginx's workers, nobody when the
    # tests run as root, write its proxy_cache there.
    gateway = Gateway(
        store_directory(),
        {
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_STATUS_PORT": str(free_port()),
            "PHOTOS_PORT": str(instance.port),
            "PHOTOS_STORE": "s3",
            "S3_BUCKET": BUCKET,
            "PHOTOS_UPLOAD_RATE": "1000",
        },
    )
    instance.start()
    try:
        gateway.start()
        yield instance, gateway
    finally:
        gateway.stop()
        instance.stop()
        remove_tree(gateway.run_dir)


def test_upload_lands_in_the_bucket_once_and_is_served_from_the_gateway_cache(
    s3_endpoint: str, s3_stack: tuple[ServiceInstance, Gateway]
) -> None:
    instance, gw = s3_stack
    data = images.phone_jpeg(800, 600)
    first, second = upload(gw.port, data), upload(gw.port, data)
    assert first.status == second.status == 201, first.body
    assert first.json() == second.json()
    urls = first.json()
    names = {path_of(u).split("/")[-1] for u in urls.values()}
    assert {f"photos/{n}" for n in names} <= bucket_keys(s3_endpoint)
    assert len(bucket_keys(s3_endpoint)) == 2
    bodies = {}
    for key, url in urls.items():
        resp = request(gw.port, "GET", path_of(url))
        assert resp.status == 200, resp.body
        assert resp.header("Content-Type") == "image/jpeg"
        assert resp.header("Cache-Control") == IMMUTABLE
        assert resp.header("X-Content-Type-Options") == "nosniff"
        assert resp.header("ETag")
        assert b"Exif" not in resp.body
        bodies[key] = resp.body
        head = request(gw.port, "HEAD", path_of(url))
        assert head.status == 200 and head.header("Content-Length") == str(len(resp.body))
    assert_json_error(request(gw.port, "GET", "/photos/" + "1" * 32 + ".jpg"), 404)
    # The gateway's proxy_cache holds them now: served with no photos instance up.
    instance.stop()
    try:
        for key, url in urls.items():
            resp = request(gw.port, "GET", path_of(url))
            assert resp.status == 200 and resp.body == bodies[key]
    finally:
        instance.start()


def test_refusal_stores_nothing_in_the_bucket(
    s3_endpoint: str, s3_stack: tuple[ServiceInstance, Gateway]
) -> None:
    _, gw = s3_stack
    before = bucket_keys(s3_endpoint)
    assert_json_error(upload(gw.port, images.bomb_png(), "image/png"), 422)
    assert_json_error(upload(gw.port, images.SVG, "image/png"), 415)
    assert bucket_keys(s3_endpoint) == before


def test_an_unreachable_store_is_a_json_503(tmp_path: Path) -> None:
    env = {
        **S3_ENV,
        "PHOTOS_STORE": "s3",
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
    }
    instance = ServiceInstance("photos", free_port(), env, tmp_path / "photos.log")
    instance.start(wait=False)
    try:
        wait_http(f"http://127.0.0.1:{instance.port}/healthz")
        assert request(instance.port, "GET", "/readyz").status == 503
        assert_json_error(upload(instance.port, images.phone_jpeg(64, 64)), 503)
        assert_json_error(request(instance.port, "GET", "/photos/" + "2" * 32 + ".jpg"), 503)
    finally:
        instance.stop()


async def test_s3_store_lists_and_deletes_for_gc(s3_endpoint: str) -> None:
    from services.photos import sweep
    from services.photos.s3_store import S3Store
    from services.photos.settings import S3Settings

    # A prefix of its own: the bucket's photos/ belong to the tests above.
    settings = S3Settings(BUCKET, s3_endpoint, "us-east-1", "gc-test/", "test", "test")
    store = S3Store(settings)
    await store.open()
    try:
        names = [f"{'ab' * 16}.jpg", f"{'ab' * 16}-thumb.jpg", f"{'cd' * 16}.jpg"]
        for name in names:
            await store.put(name, b"x", "image/jpeg")
        assert sorted(n for n, _ in await store.listing()) == sorted(names)
        deleted = await sweep.collect(store, {"cd" * 16}, older_than_s=-60)
        assert deleted == names[:2]
        assert [n for n, _ in await store.listing()] == names[2:]
        assert not await store.exists(names[0])
    finally:
        await store.close()
