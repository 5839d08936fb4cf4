"""Photo upload through the whole local stack (tests/e2e/conftest.py): the
supervisord photos programs on the stack's store, the gateway serving the
stored file itself, every photos instance serving it too, and a review
carrying the URLs."""

from __future__ import annotations

import json

from services.photos import settings as photos_cfg
from tests.e2e.conftest import Stack
from tests.gateway.harness import request
from tests.photos import images


def test_upload_is_served_by_the_gateway_and_every_instance(stack: Stack) -> None:
    data = images.phone_jpeg(640, 480)
    resp = request(
        stack.gateway, "POST", "/photos", body=data, headers={"Content-Type": "image/jpeg"}
    )
    assert resp.status == 201, resp.body
    urls = resp.json()
    path = "/" + urls["url"].split("/", 3)[3]
    served = request(stack.gateway, "GET", path)
    assert served.status == 200 and served.header("Content-Type") == "image/jpeg"
    assert served.header("Cache-Control") == "public, max-age=31536000, immutable"
    for port in photos_cfg.instance_ports(stack.env):
        assert request(port, "GET", path).body == served.body
    assert (photos_cfg.store_dir(stack.env) / path.rsplit("/", 1)[1]).is_file()
    review = {
        "product_id": 1,
        "rating": 5,
        "summary": "Pictures",
        "body": "An end-to-end review with uploaded photos, long enough to pass.",
        "recommend": True,
        "name": "e2e-photos",
        "email": "e2e@example.com",
        "photos": [urls["url"]],
    }
    headers = {"Content-Type": "application/json"}
    resp = request(stack.gateway, "POST", "/reviews", json.dumps(review).encode(), headers)
    assert resp.status == 201, resp.body
