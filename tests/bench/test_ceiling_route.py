"""bench/ceiling.py --route: the bare handler answers each route's bytes as
the service does, from the same statement (else `of_bare` in bench.cold_ab
compares two different things)."""

from __future__ import annotations

from bench import scrape
from bench.ceiling import ROUTE_LOADS, create_app, probe_key
from bench.cold_ab import ROUTES


def path(route: str, key: int) -> str:
    _, before, after = ROUTES[route]
    return f"{before}{key}{after}"


def test_every_cold_ab_route_has_its_statement() -> None:
    assert set(ROUTE_LOADS) == set(ROUTES)


async def test_reviews_routes_answer_the_services_bytes(
    aiohttp_client, service_client, reviews_db
) -> None:
    service = await service_client("reviews", reviews_db)
    for n in range(3):
        review = {
            "product_id": 7,
            "rating": 3 + n,
            "summary": f"summary {n}",
            "body": "A body long enough for the fifty character minimum of the contract.",
            "recommend": n != 1,
            "name": f"name{n}",
            "email": f"e{n}@example.com",
            "photos": ["https://example.com/a.jpg"] * n,
            "characteristics": {},
        }
        assert (await service.post("/reviews", json=review)).status == 201
    # The oldest review voted up: the three sorts then order the page differently.
    page = await (await service.get("/reviews/?product_id=7&sort=newest")).json()
    oldest = page["results"][-1]["review_id"]
    assert (await service.put(f"/reviews/{oldest}/helpful")).status == 204
    for route in ("list1000", "list30", "list5", "meta"):
        bare = await aiohttp_client(create_app(reviews_db, route=route))
        for key in (7, 8):  # with reviews, and none
            served = await service.get(path(route, key))
            got = await bare.get(path(route, key))
            assert (got.status, await got.read()) == (200, await served.read()), (route, key)


async def test_qa_routes_answer_the_services_bytes(aiohttp_client, service_client, qa_db) -> None:
    service = await service_client("qa", qa_db)
    asked = {"body": "Does it run small?", "name": "asker", "email": "a@example.com"}
    created = await service.post("/qa/questions", json={**asked, "product_id": 7})
    assert created.status == 201
    question_id = await (await service.get("/qa/questions?product_id=7")).json()
    question_id = question_id["results"][0]["question_id"]
    answer = {"body": "Yes", "name": "answerer", "email": "b@example.com", "photos": []}
    posted = await service.post(f"/qa/questions/{question_id}/answers", json=answer)
    assert posted.status == 201
    for route, key in (("questions", 7), ("questions", 8), ("answers", question_id)):
        bare = await aiohttp_client(create_app(qa_db, route=route))
        served = await service.get(path(route, key))
        got = await bare.get(path(route, key))
        assert (got.status, await got.read()) == (200, await served.read()), (route, key)
    bare = await aiohttp_client(create_app(qa_db, route="answers"))
    assert (await bare.get(path("answers", question_id + 1000))).status == 404


async def test_an_unknown_product_is_a_404(aiohttp_client, overview_db) -> None:
    bare = await aiohttp_client(create_app(overview_db, route="product"))
    assert (await bare.get(path("product", 999_999))).status == 404


def test_the_probe_takes_the_paths_first_number() -> None:
    assert probe_key("/query?id=42") == 42  # ceiling-query's own requests
    assert probe_key("/reviews/?product_id=7&page=1&count=5&sort=newest") == 7
    assert probe_key("/qa/questions/9/answers?page=1&count=5") == 9
    assert probe_key("/fixed") == 1


async def test_a_ceiling_stands_in_for_a_service_behind_the_gateway(
    aiohttp_client, reviews_db
) -> None:
    """--query with --body-bytes on a service's port (docs/decisions/0062):
    every read answers the padded body, and /metrics an exposition that
    bench.run's scrape reads as no counters."""
    stand_in = await aiohttp_client(create_app(reviews_db, body_bytes=1_500))
    got = await stand_in.get("/reviews/meta?product_id=7")
    assert (got.status, len(await got.read())) == (200, 1_500)
    metrics = await stand_in.get("/metrics")
    assert metrics.status == 200
    counts: scrape.CacheCounts = scrape.Counter()
    scrape.add_counts(counts, await metrics.text())
    assert counts == scrape.Counter()
