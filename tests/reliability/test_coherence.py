"""Cache coherence under concurrency: many clients send a random mix of reads
and writes to both instances of a service at once (each request to a random
instance). Each client is a session with its own cookie jar (the write
marker, services/common/write_marker.py). Every read is checked against
every write of its own session acknowledged before the read started
(strictly: read-your-writes whichever instance answers), and against every
other session's write acknowledged more than the staleness bound (LEASE_S)
before it: a review, question or answer posted must be listed, and a
helpfulness must be at least the number of acknowledged votes. Times are
taken conservatively (a read's start before it is sent, a write's
acknowledgement after its answer is read), so a violation is a real one.

RUNWAY_COHERENCE_OPS (default 2000) operations per service; the issue's full
run is RUNWAY_COHERENCE_OPS=10000."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from services.common.cache import LEASE_S
from tests.conftest import RedisServer
from tests.gateway.harness import ServiceInstance, free_instance_base
from tests.reliability.conftest import FaultStack
from tests.reliability.harness import env_int, record_figures
from tests.reliability.load import Outcome, Request, send
from tests.reliability.workloads import BODY, marker

OPS = env_int("RUNWAY_COHERENCE_OPS", 2000)
CLIENTS = 16
PRODUCTS = 8


BOUND_S = LEASE_S  # other sessions' writes show within this (DESIGN.md, invariant 1)


@dataclass
class History:
    """Acknowledgement times (and sessions) of writes, so a read can ask what
    it must show: its own session's writes acknowledged before it began, the
    others' acknowledged BOUND_S before. `session` is set by the client
    whose outcome is being observed; `within_bound` counts the reads that
    lacked another session's write acknowledged less than BOUND_S before
    (allowed: the figure shows the bound is used)."""

    posted: dict[object, list[tuple[float, str, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    votes: dict[tuple[str, int], list[tuple[float, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    violations: list[str] = field(default_factory=list)
    checks: int = 0
    within_bound: int = 0
    session: int = 0

    def _required(self, t: float, who: int, start: float) -> bool:
        return t < start and (who == self.session or t < start - BOUND_S)

    def markers_before(self, parent: object, start: float) -> set[str]:
        return {m for t, m, who in self.posted[parent] if self._required(t, who, start)}

    def votes_before(self, target: tuple[str, int], start: float) -> int:
        return sum(1 for t, who in self.votes[target] if self._required(t, who, start))

    def expect_markers(self, what: str, parent: object, shown: set[str], start: float) -> None:
        self.checks += 1
        lost = self.markers_before(parent, start) - shown
        if lost:
            self.violations.append(f"{what}: read at {start:.3f} lacks {sorted(lost)[:3]}")
        elif {m for t, m, _ in self.posted[parent] if t < start} - shown:
            self.within_bound += 1

    def expect_votes(self, target: tuple[str, int], shown: int, start: float) -> None:
        self.checks += 1
        needed = self.votes_before(target, start)
        if shown < needed:
            self.violations.append(f"{target}: helpfulness {shown} < {needed} acknowledged votes")
        elif shown < sum(1 for t, _ in self.votes[target] if t < start):
            self.within_bound += 1


class ReviewsModel:
    def __init__(self, first_product: int) -> None:
        self.products = list(range(first_product, first_product + PRODUCTS))
        self.review_ids: list[int] = []

    def next(self, rng: random.Random) -> Request:
        product = rng.choice(self.products)
        roll = rng.random()
        if roll < 0.5:
            return Request("GET", f"/reviews?product_id={product}&count=1000&sort=newest")
        if roll < 0.65:
            return Request("GET", f"/reviews/meta?product_id={product}")
        if roll < 0.85 or not self.review_ids:
            mark = marker("coh-review")
            body = {
                "product_id": product,
                "rating": rng.randint(1, 5),
                "summary": mark,
                "body": BODY,
                "recommend": True,
                "name": "coherence",
                "email": "c@example.com",
            }
            return Request(
                "POST", "/reviews", body, marker=mark, expect=(201,), target=("product", product)
            )
        review_id = rng.choice(self.review_ids)
        return Request(
            "PUT", f"/reviews/{review_id}/helpful", target=("review", review_id), expect=(204,)
        )

    def observe(self, o: Outcome, history: History) -> None:
        r = o.request
        if not o.ok:
            history.violations.append(f"failed: {o.describe()}")
        elif r.method == "POST":
            history.posted[r.target].append((o.end, r.marker, history.session))
        elif r.method == "PUT":
            history.votes[r.target].append((o.end, history.session))
        elif r.path.startswith("/reviews/meta"):
            self._check_meta(o, history)
        else:
            self._check_list(o, history)

    def _product(self, o: Outcome) -> tuple[str, int]:
        return ("product", int(o.request.path.split("product_id=")[1].split("&")[0]))

    def _check_list(self, o: Outcome, history: History) -> None:
        results = json.loads(o.body)["results"]
        history.expect_markers(
            o.request.path, self._product(o), {x["summary"] for x in results}, o.start
        )
        for review in results:
            if review["review_id"] not in self.review_ids:
                self.review_ids.append(review["review_id"])
            history.expect_votes(("review", review["review_id"]), review["helpfulness"], o.start)

    def _check_meta(self, o: Outcome, history: History) -> None:
        total = sum(int(n) for n in json.loads(o.body)["ratings"].values())
        history.checks += 1
        needed = len(history.markers_before(self._product(o), o.start))
        if total < needed:
            history.violations.append(f"{o.request.path}: {total} ratings < {needed} posted")


class QaModel:
    def __init__(self, first_product: int) -> None:
        self.products = list(range(first_product, first_product + PRODUCTS))
        self.question_ids: list[int] = []
        self.answer_ids: list[int] = []

    def next(self, rng: random.Random) -> Request:
        roll = rng.random()
        person = {"name": "coherence", "email": "c@example.com"}
        product = rng.choice(self.products)
        if roll < 0.25:
            return Request("GET", f"/qa/questions?product_id={product}&count=1000")
        if roll < 0.37 or not self.question_ids:
            mark = marker("coh-question")
            return Request(
                "POST",
                "/qa/questions",
                {"body": mark, "product_id": product, **person},
                marker=mark,
                expect=(201,),
                target=("product", product),
            )
        question = rng.choice(self.question_ids)
        if roll < 0.6:
            return Request("GET", f"/qa/questions/{question}/answers?count=1000")
        if roll < 0.72:
            mark = marker("coh-answer")
            return Request(
                "POST",
                f"/qa/questions/{question}/answers",
                {"body": mark, "photos": [], **person},
                marker=mark,
                expect=(201,),
                target=("question", question),
            )
        if roll < 0.86 or not self.answer_ids:
            return Request(
                "PUT",
                f"/qa/questions/{question}/helpful",
                target=("q-votes", question),
                expect=(204,),
            )
        answer = rng.choice(self.answer_ids)
        return Request(
            "PUT", f"/qa/answers/{answer}/helpful", target=("a-votes", answer), expect=(204,)
        )

    def observe(self, o: Outcome, history: History) -> None:
        r = o.request
        if not o.ok:
            history.violations.append(f"failed: {o.describe()}")
        elif r.method == "POST":
            # An answer must show in its question's list and embedded in the product's.
            history.posted[r.target].append((o.end, r.marker, history.session))
        elif r.method == "PUT":
            history.votes[r.target].append((o.end, history.session))
        elif "/answers" in r.path:
            self._check_answers(o, history)
        else:
            self._check_questions(o, history)

    def _check_answers(self, o: Outcome, history: History) -> None:
        question = int(o.request.path.split("/")[3])
        results = json.loads(o.body)["results"]
        history.expect_markers(
            o.request.path, ("question", question), {a["body"] for a in results}, o.start
        )
        for answer in results:
            self._remember(self.answer_ids, answer["answer_id"])
            history.expect_votes(("a-votes", answer["answer_id"]), answer["helpfulness"], o.start)

    def _check_questions(self, o: Outcome, history: History) -> None:
        product = int(o.request.path.split("product_id=")[1].split("&")[0])
        results = json.loads(o.body)["results"]
        history.expect_markers(
            o.request.path, ("product", product), {q["question_body"] for q in results}, o.start
        )
        for question in results:
            qid = question["question_id"]
            self._remember(self.question_ids, qid)
            history.expect_votes(("q-votes", qid), question["question_helpfulness"], o.start)
            embedded = {a["body"] for a in question["answers"].values()}
            history.expect_markers(
                f"{o.request.path} answers of {qid}", ("question", qid), embedded, o.start
            )
            for answer in question["answers"].values():
                history.expect_votes(("a-votes", answer["id"]), answer["helpfulness"], o.start)

    @staticmethod
    def _remember(ids: list[int], value: int) -> None:
        if value not in ids:
            ids.append(value)


MODELS = {"reviews": (ReviewsModel, 100_001), "qa": (QaModel, 200_001)}


async def run_clients(bases: list[str], model, ops: int, history: History) -> dict:
    remaining = [ops]
    per_instance: dict[str, int] = defaultdict(int)

    async def client(index: int) -> None:
        rng = random.Random(index)
        # A session of its own: its cookie jar carries its writes' markers
        # (unsafe=True: cookies for an IP address host).
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            while remaining[0] > 0:
                remaining[0] -= 1
                base = rng.choice(bases)
                per_instance[base] += 1
                outcome = await send(session, base, model.next(rng), timeout_s=10)
                history.session = index  # no await between: observe() sees this session
                model.observe(outcome, history)

    start = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return {"seconds": round(time.monotonic() - start, 1), "per_instance": dict(per_instance)}


@pytest.mark.parametrize("service", ["reviews", "qa"])
async def test_no_read_misses_an_acknowledged_write(fault_stack: FaultStack, service: str) -> None:
    fault_stack.require(service)
    bases = [f"http://127.0.0.1:{p}" for p in fault_stack.cluster.ports(service)]
    model_class, first_product = MODELS[service]
    model = model_class(first_product)
    history = History()
    run = await run_clients(bases, model, OPS, history)
    writes = sum(len(v) for v in history.posted.values()) + sum(
        len(v) for v in history.votes.values()
    )
    record_figures(
        f"coherence[{service}]",
        {
            "ops": OPS,
            "clients": CLIENTS,
            "acknowledged_writes": writes,
            "reads": OPS - writes,
            "checks": history.checks,
            "violations": len(history.violations),
            "stale_within_bound": history.within_bound,
            "bound_s": BOUND_S,
            **run,
        },
    )
    assert len(run["per_instance"]) == 2
    assert writes > OPS // 5 and history.checks > OPS, "too few writes or checks to mean much"
    assert history.violations == []


async def test_the_checker_sees_stale_reads(
    fault_stack: FaultStack, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Negative control: two reviews instances on the same database but on two
    different Redis servers never hear of each other's writes, so their caches
    go stale; the same clients and checks must report it."""
    fault_stack.require("reviews")
    redis_urls = [fault_stack.redis.url, redis_server.url]
    env = {"REVIEWS_DATABASE_URL": fault_stack.dsn("reviews"), "DB_POOL_MAX": "4"}
    instances = [
        ServiceInstance(
            "reviews", free_instance_base(1), {**env, "REDIS_URL": url}, tmp_path / f"split-{i}.log"
        )
        for i, url in enumerate(redis_urls)
    ]
    for instance in instances:
        await asyncio.to_thread(instance.start)
    try:
        history = History()
        bases = [f"http://127.0.0.1:{i.port}" for i in instances]
        await run_clients(bases, ReviewsModel(300_001), 600, history)
    finally:
        for instance in instances:
            await asyncio.to_thread(instance.stop)
    assert history.violations, "split caches served no stale read: the checker is blind"


async def test_the_write_marker_passes_through_the_gateway(fault_stack: FaultStack) -> None:
    """NGINX passes the write's marker both ways (Set-Cookie on the reply,
    Cookie on the next request) and caches neither: the session's read right
    after its write, through the gateway, shows it."""
    fault_stack.require("reviews")
    product = 400_001
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        for round_ in range(5):
            mark = marker("gw-marker")
            review = {
                "product_id": product,
                "rating": 5,
                "summary": mark,
                "body": BODY,
                "recommend": True,
                "name": "marker",
                "email": "m@example.com",
            }
            url = fault_stack.gateway_url
            async with session.post(f"{url}/reviews", json=review) as resp:
                assert resp.status == 201
                assert resp.cookies["runway_w"].value == resp.headers["X-Runway-Write"]
                assert resp.cookies["runway_w"]["httponly"]
            async with session.get(f"{url}/reviews?product_id={product}&count=100") as resp:
                assert resp.status == 200
                summaries = {r["summary"] for r in (await resp.json())["results"]}
            assert mark in summaries, round_
