"""A cache outage degrades speed, never correctness or availability."""

from __future__ import annotations

import time

from services.common.resources import CACHE
from services.reviews.app import create_app
from tests.conftest import settings_for, truncate_all

BODY = {
    "product_id": 3,
    "rating": 5,
    "body": "x" * 50,
    "recommend": True,
    "name": "n",
    "email": "n@example.com",
}


async def test_service_answers_from_postgres_while_redis_is_down(
    aiohttp_client, reviews_db, private_redis
):
    await truncate_all(reviews_db)
    client = await aiohttp_client(
        create_app(settings_for("reviews", reviews_db, private_redis.url))
    )
    assert (await client.post("/reviews", json=BODY)).status == 201
    assert len((await (await client.get("/reviews?product_id=3")).json())["results"]) == 1

    private_redis.stop()
    start = time.perf_counter()
    for _ in range(10):
        resp = await client.get("/reviews?product_id=3")
        assert resp.status == 200
    assert time.perf_counter() - start < 2
    # Writes still succeed and are visible at once.
    assert (await client.post("/reviews", json=BODY)).status == 201
    body = await (await client.get("/reviews?product_id=3")).json()
    assert len(body["results"]) == 2
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["cache"]["redis"] == "down"

    private_redis.start()
    assert await client.app[CACHE].wait_ready(5)
    assert (await (await client.get("/readyz")).json())["cache"]["redis"] == "up"
    assert len((await (await client.get("/reviews?product_id=3")).json())["results"]) == 2
