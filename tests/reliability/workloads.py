"""What the fault tests send to each service: a mix of the service's reads and
writes (about one in five a write), each write carrying a unique marker (or
naming the row whose counter it increments) so the test can afterwards look
every acknowledged write up in the database."""

from __future__ import annotations

import itertools
import random
import secrets
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import asyncpg

from tests.reliability.load import Request

PRODUCTS = 10  # products the load spreads over (ids 1..PRODUCTS)
PROBES = 8
BODY = "A review body long enough for the contract's fifty character minimum."
_RUN = secrets.token_hex(3)
_COUNTER = itertools.count(1)


def marker(kind: str) -> str:
    """Unique across the session (and across runs, thanks to the run tag)."""
    return f"{kind}-{_RUN}-{next(_COUNTER)}"


class Workload(Protocol):
    service: str

    def probes(self) -> list[str]:
        """Cacheable reads (200s) that pick() never sends, to test a cache tier
        on keys the load has not filled."""
        ...

    async def seed(self, base: str, dsn: str) -> None: ...

    def pick(self, rng: random.Random) -> Request: ...

    async def missing(self, dsn: str, markers: set[str]) -> set[str]: ...

    async def counters(self, dsn: str, targets: list[tuple[str, int]]) -> dict: ...


async def _fetch_column(dsn: str, sql: str, *args: object) -> list:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return [r[0] for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def _counters(dsn: str, targets: list[tuple[str, int]], column: dict[str, str]) -> dict:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        found = {}
        for table, row_id in targets:
            found[(table, row_id)] = await conn.fetchval(
                f"SELECT {column[table]} FROM {table} WHERE id = $1", row_id
            )
        return found
    finally:
        await conn.close()


async def _post_all(base: str, path: str, bodies: list[dict]) -> None:
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(base + path, json=body) as resp:
                assert resp.status == 201, (path, resp.status, await resp.text())


# --- reviews ------------------------------------------------------------------------------


def review_body(product_id: int, summary: str, rng: random.Random) -> dict:
    return {
        "product_id": product_id,
        "rating": rng.randint(1, 5),
        "summary": summary,
        "body": BODY,
        "recommend": rng.random() < 0.5,
        "name": "loadtester",
        "email": "load@example.com",
    }


@dataclass
class Reviews:
    service: str = "reviews"
    review_ids: list[int] = field(default_factory=list)

    def probes(self) -> list[str]:
        return [f"/reviews/meta?product_id={PRODUCTS + i}" for i in range(1, PROBES + 1)]

    async def seed(self, base: str, dsn: str) -> None:
        tag = marker("seed")
        rng = random.Random(0)
        bodies = [review_body(p, f"{tag}-{p}", rng) for p in range(1, PRODUCTS + 1)]
        await _post_all(base, "/reviews", bodies)
        self.review_ids = await _fetch_column(
            dsn, "SELECT id FROM reviews WHERE summary LIKE $1 || '-%' ORDER BY id", tag
        )

    def pick(self, rng: random.Random) -> Request:
        product = rng.randint(1, PRODUCTS)
        roll = rng.random()
        if roll < 0.5:
            sort = rng.choice(["newest", "helpful", "relevant"])
            count = rng.choice([5, 20])
            return Request("GET", f"/reviews?product_id={product}&sort={sort}&count={count}")
        if roll < 0.8:
            return Request("GET", f"/reviews/meta?product_id={product}")
        if roll < 0.92:
            mark = marker("review")
            return Request(
                "POST", "/reviews", review_body(product, mark, rng), marker=mark, expect=(201,)
            )
        review_id = rng.choice(self.review_ids)
        return Request(
            "PUT", f"/reviews/{review_id}/helpful", target=("reviews", review_id), expect=(204,)
        )

    async def missing(self, dsn: str, markers: set[str]) -> set[str]:
        found = await _fetch_column(
            dsn, "SELECT summary FROM reviews WHERE summary = ANY($1)", list(markers)
        )
        return markers - set(found)

    async def counters(self, dsn: str, targets: list[tuple[str, int]]) -> dict:
        return await _counters(dsn, targets, {"reviews": "helpfulness"})


# --- qa -------------------------------------------------------------------------------------


def person() -> dict[str, str]:
    return {"name": "loadtester", "email": "load@example.com"}


@dataclass
class Qa:
    service: str = "qa"

    def probes(self) -> list[str]:
        return [f"/qa/questions?product_id={PRODUCTS + i}" for i in range(1, PROBES + 1)]

    question_ids: list[int] = field(default_factory=list)
    answer_ids: list[int] = field(default_factory=list)

    async def seed(self, base: str, dsn: str) -> None:
        tag = marker("seed")
        questions = [
            {"body": f"{tag}-{p}", "product_id": p, **person()} for p in range(1, PRODUCTS + 1)
        ]
        await _post_all(base, "/qa/questions", questions)
        self.question_ids = await _fetch_column(
            dsn, "SELECT id FROM questions WHERE body LIKE $1 || '-%' ORDER BY id", tag
        )
        for question_id in self.question_ids:
            answer = {"body": f"{tag}-a{question_id}", **person(), "photos": []}
            await _post_all(base, f"/qa/questions/{question_id}/answers", [answer])
        self.answer_ids = await _fetch_column(
            dsn, "SELECT id FROM answers WHERE body LIKE $1 || '-a%' ORDER BY id", tag
        )

    def pick(self, rng: random.Random) -> Request:
        roll = rng.random()
        question = rng.choice(self.question_ids)
        if roll < 0.5:
            product = rng.randint(1, PRODUCTS)
            count = rng.choice([5, 20])
            return Request("GET", f"/qa/questions?product_id={product}&count={count}")
        if roll < 0.8:
            return Request("GET", f"/qa/questions/{question}/answers?count=20")
        if roll < 0.86:
            mark = marker("question")
            body = {"body": mark, "product_id": rng.randint(1, PRODUCTS), **person()}
            return Request("POST", "/qa/questions", body, marker=mark, expect=(201,))
        if roll < 0.92:
            mark = marker("answer")
            body = {"body": mark, **person(), "photos": []}
            return Request(
                "POST", f"/qa/questions/{question}/answers", body, marker=mark, expect=(201,)
            )
        if roll < 0.96:
            return Request(
                "PUT",
                f"/qa/questions/{question}/helpful",
                target=("questions", question),
                expect=(204,),
            )
        answer = rng.choice(self.answer_ids)
        return Request(
            "PUT", f"/qa/answers/{answer}/helpful", target=("answers", answer), expect=(204,)
        )

    async def missing(self, dsn: str, markers: set[str]) -> set[str]:
        found = await _fetch_column(
            dsn,
            "SELECT body FROM questions WHERE body = ANY($1)"
            " UNION ALL SELECT body FROM answers WHERE body = ANY($1)",
            list(markers),
        )
        return markers - set(found)

    async def counters(self, dsn: str, targets: list[tuple[str, int]]) -> dict:
        return await _counters(dsn, targets, {"questions": "helpful", "answers": "helpful"})


# --- overview -------------------------------------------------------------------------------

# Overview has no API that creates catalogue rows (the loader does), so the few
# rows the reads need are inserted here; the stock is large so carts never fill.
OVERVIEW_SEED = """
INSERT INTO products (id, seq, name, slogan, description, category, default_price)
SELECT p, p, 'Product ' || p, 'slogan', 'description', 'Jackets', 100 + p
FROM generate_series(1, $1) p ON CONFLICT DO NOTHING;
INSERT INTO features (product_id, feature, value)
SELECT p, 'Fabric', 'Canvas' FROM generate_series(1, $1) p;
INSERT INTO styles (id, product_id, name, sale_price, original_price, default_style)
SELECT p, p, 'Style ' || p, NULL, 100 + p, true FROM generate_series(1, $1) p
ON CONFLICT DO NOTHING;
INSERT INTO photos (style_id, url, thumbnail_url)
SELECT p, 'https://img.example/' || p, 'https://img.example/t' || p FROM generate_series(1, $1) p;
INSERT INTO skus (id, style_id, size, quantity)
SELECT p, p, 'M', 100000000 FROM generate_series(1, $1) p ON CONFLICT DO NOTHING;
INSERT INTO related (current_product_id, related_product_id)
SELECT p, p % $1 + 1 FROM generate_series(1, $1) p;
"""


@dataclass
class Overview:
    service: str = "overview"

    def probes(self) -> list[str]:
        return [f"/products?page={2 + i}&count=5" for i in range(1, PROBES + 1)]

    async def seed(self, base: str, dsn: str) -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            for statement in filter(str.strip, OVERVIEW_SEED.split(";")):
                await conn.execute(statement, PRODUCTS)
        finally:
            await conn.close()

    def pick(self, rng: random.Random) -> Request:
        product = rng.randint(1, PRODUCTS)
        roll = rng.random()
        if roll < 0.8:
            path = rng.choice(
                [
                    f"/products?page={rng.randint(1, 2)}&count=5",
                    f"/products/{product}",
                    f"/products/{product}/styles",
                    f"/products/{product}/related",
                ]
            )
            return Request("GET", path)
        if roll < 0.9:
            mark = marker("click")
            body = {"element": mark, "widget": "load", "time": "now"}
            return Request("POST", "/interactions", body, marker=mark, expect=(201,))
        session = marker("cart")  # a session of its own: its cart never reaches the stock
        return Request(
            "POST",
            "/cart",
            {"sku_id": product},
            headers={"X-Session-Id": session},
            marker=session,
            expect=(201,),
        )

    async def missing(self, dsn: str, markers: set[str]) -> set[str]:
        found = await _fetch_column(
            dsn,
            "SELECT element FROM interactions WHERE element = ANY($1)"
            " UNION ALL SELECT session_id FROM cart_items WHERE session_id = ANY($1)",
            list(markers),
        )
        return markers - set(found)

    async def counters(self, dsn: str, targets: list[tuple[str, int]]) -> dict:
        return {}


WORKLOADS: dict[str, type] = {"reviews": Reviews, "qa": Qa, "overview": Overview}


def workload(service: str) -> Workload:
    return WORKLOADS[service]()
