"""Read-your-writes across two real service processes sharing Postgres and Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import pytest

from tests.conftest import ROOT, free_port, truncate_all


def start_service(service: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"services.{service}.app"],
        cwd=ROOT,
        env={**os.environ, **env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_ready(session: aiohttp.ClientSession, port: int, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                if resp.status == 200 and (await resp.json())["cache"]["local_tier"] == "live":
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)  # polls other processes over HTTP: no in-process hook to await
    raise TimeoutError(f"service on {port} not ready")


@pytest.fixture
def two_reviews_processes(reviews_db, redis_server) -> Iterator[list[int]]:
    asyncio.run(truncate_all(reviews_db))
    redis_server.flush()
    ports = [free_port(), free_port()]
    env = {
        "REVIEWS_DATABASE_URL": reviews_db,
        "REDIS_URL": redis_server.url,
        "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "4",
    }
    procs = [start_service("reviews", port, env) for port in ports]
    yield ports
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=15)


async def test_a_write_on_one_process_is_read_on_the_other(two_reviews_processes):
    a, b = (f"http://127.0.0.1:{p}" for p in two_reviews_processes)
    # One shopper's session: its cookie jar must keep the write marker
    # (runway_w) that 127.0.0.1 sets, which aiohttp's default jar refuses for an
    # IP host; read-your-writes across processes is a guarantee for the
    # writer's session (cache/DESIGN.md invariant 1), not for a cookieless one.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        for port in two_reviews_processes:
            await wait_ready(session, port)

        async def reviews(base: str) -> list[dict]:
            async with session.get(f"{base}/reviews?product_id=5&count=100") as resp:
                assert resp.status == 200
                return (await resp.json())["results"]

        async def meta(base: str) -> dict:
            async with session.get(f"{base}/reviews/meta?product_id=5") as resp:
                return await resp.json()

        for i in range(12):
            writer, reader = (a, b) if i % 2 == 0 else (b, a)
            # Warm both processes' caches with the current answer.
            before = await reviews(reader)
            await reviews(writer)
            await meta(reader)
            body = {
                "product_id": 5,
                "rating": 1 + i % 5,
                "body": "b" * 60,
                "recommend": True,
                "name": "n",
                "email": "n@example.com",
            }
            async with session.post(f"{writer}/reviews", json=body) as resp:
                assert resp.status == 201
            after = await reviews(reader)
            assert len(after) == len(before) + 1
            assert (await meta(reader))["ratings"] == (await meta(writer))["ratings"]
            newest = max(r["review_id"] for r in after)
            async with session.put(f"{writer}/reviews/{newest}/helpful") as resp:
                assert resp.status == 204
            top = (await reviews(reader))[0]
            assert top["review_id"] == newest and top["helpfulness"] == 1
