"""Uploads through a real nginx in front of two photos instances sharing a
local store: each accepted format, metadata stripped and orientation applied,
one stored object for the same bytes, every refusal with its JSON error and
nothing stored, the URLs accepted by reviews and answers, and a photo served
by the gateway itself and by either instance, across a restart."""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from PIL import Image

from tests.conftest import free_port
from tests.gateway.harness import Gateway, Response, request
from tests.gateway.openapi_check import document, validate
from tests.photos import images
from tests.photos.conftest import Stack, stored

IMMUTABLE = "public, max-age=31536000, immutable"


def upload(port: int, data: bytes, content_type: str = "image/jpeg") -> Response:
    return request(port, "POST", "/photos", body=data, headers={"Content-Type": content_type})


def multipart(port: int, data: bytes, field: str = "photo", filename: str = "p.jpg") -> Response:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return request(port, "POST", "/photos", body=body, headers=headers)


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def assert_json_error(resp: Response, status: int) -> str:
    assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.header("Content-Type").startswith("application/json")
    body = resp.json()
    assert list(body) == ["error"] and body["error"]
    return body["error"]


def served(port: int, url: str, method: str = "GET") -> Response:
    resp = request(port, method, path_of(url))
    assert resp.status == 200, (url, resp.status, resp.body[:200])
    return resp


# --- accepted ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,content_type,served_type",
    [
        (images.phone_jpeg, "image/jpeg", "image/jpeg"),
        (images.png_rgba, "image/png", "image/webp"),  # transparency kept: WebP
        (images.png_rgb, "image/png", "image/jpeg"),
        (images.webp, "image/webp", "image/jpeg"),
        (images.cmyk_jpeg, "image/jpeg", "image/jpeg"),
        (images.palette_png, "image/png", "image/jpeg"),
    ],
)
def test_each_format_is_accepted_and_served_by_the_gateway(
    photo_stack: tuple[Stack, Gateway], make, content_type: str, served_type: str
) -> None:
    stack, gw = photo_stack
    resp = upload(gw.port, make(), content_type)
    assert resp.status == 201, resp.body
    body = resp.json()
    assert list(body) == ["url", "thumbnail_url"]
    assert resp.header("Cache-Control") == "no-store"
    base = stack.env["PUBLIC_BASE_URL"] + "/photos/"
    for key in ("url", "thumbnail_url"):
        assert body[key].startswith(base)
        got = served(gw.port, body[key])
        assert got.header("Content-Type") == served_type
        assert got.header("Cache-Control") == IMMUTABLE
        assert got.header("ETag")
        assert got.header("X-Content-Type-Options") == "nosniff"
        with Image.open(io.BytesIO(got.body)) as image:
            assert Image.MIME[image.format] == served_type
            assert max(image.size) <= (2048 if key == "url" else 300)
        head = request(gw.port, "HEAD", path_of(body[key]))
        assert head.status == 200 and head.body == b""
        assert head.header("Content-Length") == str(len(got.body))
        assert head.header("Cache-Control") == IMMUTABLE
        again = request(
            gw.port, "GET", path_of(body[key]), headers={"If-None-Match": got.header("ETag")}
        )
        assert again.status == 304


def test_multipart_field_photo_is_accepted(photo_stack: tuple[Stack, Gateway]) -> None:
    _, gw = photo_stack
    resp = multipart(gw.port, images.phone_jpeg(300, 200, orientation=1))
    assert resp.status == 201, resp.body
    served(gw.port, resp.json()["url"])


def test_gps_and_all_metadata_are_stripped_and_orientation_applied(
    photo_stack: tuple[Stack, Gateway],
) -> None:
    _, gw = photo_stack
    data = images.phone_jpeg(640, 480, orientation=6)
    assert images.exif_of(data).get_ifd(0x8825)  # the upload carries GPS
    resp = upload(gw.port, data)
    assert resp.status == 201, resp.body
    for key in ("url", "thumbnail_url"):
        body = served(gw.port, resp.json()[key]).body
        assert b"Exif" not in body and b"RunwayPhone" not in body
        with Image.open(io.BytesIO(body)) as image:
            assert not image.getexif()
            assert "icc_profile" not in image.info and "exif" not in image.info
            assert "xmp" not in image.info
            width, height = image.size
            assert height > width  # 640x480 with orientation 6: portrait
            rgb = image.convert("RGB")
            red_top = rgb.getpixel((width // 2, 5))
            blue_bottom = rgb.getpixel((width // 2, height - 5))
    assert red_top[0] > 180 and red_top[2] < 80, red_top  # left half went up
    assert blue_bottom[2] > 180 and blue_bottom[0] < 80, blue_bottom


def test_same_bytes_twice_are_one_stored_object(photo_stack: tuple[Stack, Gateway]) -> None:
    stack, gw = photo_stack
    data = images.phone_jpeg(320, 240, orientation=3)
    before = stored(stack.store)
    first = upload(gw.port, data)
    second = multipart(gw.port, data)
    assert first.status == second.status == 201
    assert first.json() == second.json()
    assert len(stored(stack.store) - before) == 2  # the image and its thumbnail


# --- refused ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,content_type,status",
    [
        pytest.param(b"just some text", "text/plain", 415, id="wrong-type"),
        pytest.param(images.SCRIPT, "image/jpeg", 415, id="script-as-jpeg"),
        pytest.param(images.SVG, "image/svg+xml", 415, id="svg"),
        pytest.param(images.SVG, "image/png", 415, id="svg-as-png"),
        pytest.param(images.HTML, "image/jpeg", 415, id="html"),
        pytest.param(images.polyglot_jpeg(), "image/jpeg", 415, id="polyglot"),
        pytest.param(images.truncated_jpeg(), "image/jpeg", 415, id="truncated-jpeg"),
        pytest.param(images.png_rgb(300, 200)[:-30], "image/png", 415, id="truncated-png"),
        pytest.param(images.bomb_png(), "image/png", 422, id="bomb-png"),
        pytest.param(images.bomb_png(8000, 6000), "image/png", 422, id="48-megapixels"),
        pytest.param(images.bomb_png(4000, 100), "image/png", 422, id="aspect-ratio"),
        pytest.param(b"", "image/jpeg", 400, id="empty"),
    ],
)
def test_refusals_are_json_and_store_nothing(
    photo_stack: tuple[Stack, Gateway], data: bytes, content_type: str, status: int
) -> None:
    stack, gw = photo_stack
    before = stored(stack.store)
    assert_json_error(upload(gw.port, data, content_type), status)
    assert stored(stack.store) == before


def test_fake_extension_in_multipart_is_refused(photo_stack: tuple[Stack, Gateway]) -> None:
    stack, gw = photo_stack
    before = stored(stack.store)
    assert_json_error(multipart(gw.port, images.HTML, filename="cute-cat.jpg"), 415)
    assert_json_error(multipart(gw.port, images.phone_jpeg(), field="picture"), 400)
    no_boundary = {"Content-Type": "multipart/form-data"}
    assert_json_error(request(gw.port, "POST", "/photos", b"x", no_boundary), 400)
    assert stored(stack.store) == before


def test_eleven_mib_is_413_at_the_gateway_and_at_the_service(
    photo_stack: tuple[Stack, Gateway],
) -> None:
    stack, gw = photo_stack
    before = stored(stack.store)
    big = images.phone_jpeg(64, 64) + b"\0" * (11 * 1024 * 1024)
    assert "10 MiB" in assert_json_error(upload(gw.port, big), 413)
    assert "10 MiB" in assert_json_error(upload(stack.photos[0].port, big), 413)
    assert stored(stack.store) == before


def test_unknown_photo_is_a_json_404(photo_stack: tuple[Stack, Gateway]) -> None:
    stack, gw = photo_stack
    for path in ("/photos/" + "0" * 32 + ".jpg", "/photos/nope.png", "/photos/.incoming/x"):
        missing = request(gw.port, "GET", path)
        assert_json_error(missing, 404)
        assert missing.header("Cache-Control") == "no-store"
        assert_json_error(request(stack.photos[0].port, "GET", path), 404)


def test_upload_rate_limit_is_a_json_429(photo_stack: tuple[Stack, Gateway], tmp_path) -> None:
    stack, _ = photo_stack
    env = stack.gateway_env(PHOTOS_UPLOAD_RATE="20", GATEWAY_PORT=str(free_port()))
    limited = Gateway(tmp_path, env)
    limited.start()
    data = images.phone_jpeg(100, 100, orientation=1)
    try:
        statuses = [upload(limited.port, data) for _ in range(20)]
        before = stored(stack.store)
        # Images never stored before: refused at the gateway, so still not stored.
        statuses += [upload(limited.port, images.phone_jpeg(90 + i, 90)) for i in range(2)]
        after = stored(stack.store)
    finally:
        limited.stop()
    codes = [r.status for r in statuses]
    assert codes[:20] == [201] * 20, codes
    assert_json_error(statuses[20], 429)
    assert codes[21] == 429
    assert int(statuses[20].header("Retry-After")) >= 1
    assert after == before


# --- shared and durable ---------------------------------------------------------------


def test_served_by_every_instance_and_after_a_restart(photo_stack: tuple[Stack, Gateway]) -> None:
    stack, gw = photo_stack
    resp = upload(gw.port, images.phone_jpeg(500, 400, orientation=8))
    assert resp.status == 201
    url = resp.json()["url"]
    bodies = {served(instance.port, url).body for instance in stack.photos}
    bodies.add(served(gw.port, url).body)
    assert len(bodies) == 1
    stack.photos[0].kill()  # no clean shutdown: the 201 was only sent after fsync
    stack.photos[0].start()
    assert served(stack.photos[0].port, url).body in bodies


# --- used by reviews and answers -------------------------------------------------------


def test_review_and_answer_accept_the_returned_urls(photo_stack: tuple[Stack, Gateway]) -> None:
    _, gw = photo_stack
    photo = upload(gw.port, images.phone_jpeg(200, 150)).json()
    urls = [photo["url"], photo["thumbnail_url"]]
    product_id = 900_000 + int(time.time()) % 1000
    review = {
        "product_id": product_id,
        "rating": 4,
        "summary": "With my own pictures",
        "body": "A review body long enough for the contract's fifty character minimum.",
        "recommend": True,
        "name": "shopper",
        "email": "shopper@example.com",
        "photos": urls,
    }
    headers = {"Content-Type": "application/json"}
    resp = request(gw.port, "POST", "/reviews", body=json.dumps(review).encode(), headers=headers)
    assert resp.status == 201, resp.body
    listed = request(gw.port, "GET", f"/reviews?product_id={product_id}&count=5").json()
    assert [p["url"] for p in listed["results"][0]["photos"]] == urls
    question = {
        "body": "Does it come with pictures?",
        "name": "asker",
        "email": "asker@example.com",
        "product_id": product_id,
    }
    resp = request(
        gw.port, "POST", "/qa/questions", body=json.dumps(question).encode(), headers=headers
    )
    assert resp.status == 201, resp.body
    questions = request(gw.port, "GET", f"/qa/questions?product_id={product_id}").json()
    question_id = questions["results"][0]["question_id"]
    answer = {"body": "Here they are.", "name": "seller", "email": "s@example.com", "photos": urls}
    resp = request(
        gw.port,
        "POST",
        f"/qa/questions/{question_id}/answers",
        body=json.dumps(answer).encode(),
        headers=headers,
    )
    assert resp.status == 201, resp.body
    answers = request(gw.port, "GET", f"/qa/questions/{question_id}/answers").json()
    assert [p["url"] for p in answers["results"][0]["photos"]] == urls


def test_answers_match_the_openapi_document(photo_stack: tuple[Stack, Gateway]) -> None:
    _, gw = photo_stack
    cases = [
        upload(gw.port, images.webp(), "image/webp"),
        upload(gw.port, b"", "image/png"),
        upload(gw.port, images.SVG, "image/svg+xml"),
        upload(gw.port, images.bomb_png(), "image/png"),
        upload(gw.port, b"\0" * (10 * 1024 * 1024 + 1)),
    ]
    assert [r.status for r in cases] == [201, 400, 415, 422, 413]
    for resp in cases:
        validate("POST", "/photos", resp.status, resp.header("Content-Type"), resp.body)
    photo = path_of(cases[0].json()["url"])
    got = request(gw.port, "GET", photo)
    documented = document()["paths"]["/photos/{name}"]["get"]["responses"]["200"]["content"]
    assert got.header("Content-Type") in documented
    missing = request(gw.port, "GET", "/photos/" + "f" * 32 + "-thumb.webp")
    path = "/photos/" + "f" * 32 + "-thumb.webp"
    validate("GET", path, missing.status, missing.header("Content-Type"), missing.body)
