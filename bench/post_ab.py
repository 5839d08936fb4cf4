"""Latency and CPU of one write, POST /reviews, old code against new.

    python -m bench.post_ab OLD_DIR NEW_DIR [ROUNDS]

Starts one reviews process of each checkout in turn (port 18960) on the
SCALE=1.0 bench database (`make bench` loads it), sends 100 POSTs to warm it
and then 1,000 one after another, and prints the median and p90 latency and
the process's CPU time per POST (/proc). Sequential requests: what a write
costs on its own, round trips included, with no batching to hide them. Old
and new alternate, ROUNDS times (default 3). Behind
docs/decisions/0012-post-review-in-one-statement.md. The reviews it writes
carry the name `post-ab`."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

from .config import PYTHON

PORT = 18960
DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/atelier_reviews_bench"
BODY = "Benchmark write: this text is long enough for the fifty character minimum rule."


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def post_reviews(count: int) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            review = {
                "product_id": 1 + (i * 7919) % 900_000,
                "rating": 4,
                "summary": "s",
                "body": BODY,
                "recommend": True,
                "name": "post-ab",
                "email": "post-ab@example.com",
                "photos": [],
                "characteristics": {},
            }
            start = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{PORT}/reviews", json=review) as resp:
                await resp.read()
                if resp.status != 201:
                    raise SystemExit(f"POST /reviews answered {resp.status}")
            latencies.append(time.perf_counter() - start)
    return latencies


def measure(label: str, checkout: str) -> None:
    env = {**os.environ, "PORT": str(PORT), "REVIEWS_DATABASE_URL": DATABASE_URL}
    service = subprocess.Popen(
        [PYTHON, "-m", "services.reviews.app"],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{label}: the service did not become ready") from None
                time.sleep(0.2)
        asyncio.run(post_reviews(100))
        before = cpu_seconds(service.pid)
        latencies = sorted(asyncio.run(post_reviews(1000)))
        cpu_us = (cpu_seconds(service.pid) - before) * 1e6 / len(latencies)
        print(
            f"{label}: median {statistics.median(latencies) * 1000:.2f} ms,"
            f" p90 {latencies[899] * 1000:.2f} ms, {cpu_us:.0f} us of service CPU per POST"
        )
    finally:
        service.terminate()
        service.wait()


def main() -> None:
    old, new = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    for _ in range(rounds):
        measure("old", old)
        measure("new", new)


if __name__ == "__main__":
    main()
