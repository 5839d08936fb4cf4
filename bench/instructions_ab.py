"""Instructions per request of one reviews process under callgrind, for two
checkouts alternated: an A/B that a shared, noisy machine cannot blur
(throughput through the gateway moved ±30% between rounds of the same code
while other work ran; instruction counts move by a few percent).

    python -m bench.instructions_ab --before /path/to/old --after . --rounds 2

Each round starts `python -m services.reviews.app` from a checkout under
`valgrind --tool=callgrind` against the benchmark database (loaded by `make
bench`) and a private Redis (flushed first), warms it up, then measures three
phases with `callgrind_control --zero/--dump` around each: hot reads (local
tier hits), cold reads (distinct products: Redis miss, Postgres, fills) and
writes (`PUT /reviews/:id/helpful`). The background work (pings, heartbeats)
is measured over an idle window and subtracted; both gross and net figures
are printed, since the background while requests run is not exactly the idle
rate. Needs valgrind (Debian's package) and a checkout whose `.venv` exists."""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg

from bench.run import parse_args

HOT_PRODUCTS = range(2, 52)
IDLE_S = 8.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ctl(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=False)


async def _review_ids(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT id FROM reviews WHERE id % 9973 = 1 LIMIT 200")
        return [r["id"] for r in rows]
    finally:
        await conn.close()


async def _drive(pid: int, base: str, review_ids: list[int]) -> dict[str, tuple[int, float]]:
    async with aiohttp.ClientSession() as s:
        deadline = time.monotonic() + 300  # valgrind starts Python slowly
        while True:
            try:
                async with s.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the service under callgrind did not get ready")
            await asyncio.sleep(0.5)

        async def call(method: str, path: str) -> None:
            async with s.request(method, base + path) as r:
                await r.read()
                if r.status not in (200, 204):
                    raise RuntimeError(f"{method} {path}: {r.status}")

        rnd = random.Random(7)
        for _ in range(2):
            for p in HOT_PRODUCTS:
                await call("GET", f"/reviews/meta?product_id={p}")
                await call("GET", f"/reviews/?product_id={p}&count=5")
        phases = {
            "hot": [("GET", f"/reviews/meta?product_id={p}") for p in HOT_PRODUCTS] * 20
            + [("GET", f"/reviews/?product_id={p}&count=5") for p in HOT_PRODUCTS] * 20,
            "cold": [
                ("GET", f"/reviews/meta?product_id={p}")
                for p in rnd.sample(range(HOT_PRODUCTS.stop, 100_000), 400)
            ],
            "write": [("PUT", f"/reviews/{i}/helpful") for i in review_ids],
        }
        timings: dict[str, tuple[int, float]] = {}
        for name, calls in phases.items():
            _ctl(pid, "--zero")
            started = time.monotonic()
            for method, path in calls:
                await call(method, path)
            _ctl(pid, f"--dump={name}")
            timings[name] = (len(calls), time.monotonic() - started)
        _ctl(pid, "--zero")
        started = time.monotonic()
        await asyncio.sleep(IDLE_S)
        _ctl(pid, "--dump=idle")
        timings["idle"] = (0, time.monotonic() - started)
        return timings


def measure(checkout: Path, dsn: str, redis_url: str, out: Path) -> dict[str, tuple[float, float]]:
    """{phase: (gross, net) instructions per request} for one checkout."""
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(checkout),
        "PORT": str(port),
        "REVIEWS_DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}/%p.out",
            str(checkout / ".venv/bin/python"),
            "-m",
            "services.reviews.app",
        ],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        timings = asyncio.run(
            _drive(proc.pid, f"http://127.0.0.1:{port}", asyncio.run(_review_ids(dsn)))
        )
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    totals: dict[str, int] = {}
    for dump in out.glob(f"{proc.pid}.out.*"):
        head = dump.read_text(errors="replace")[:2000]
        trigger = re.search(r"^desc: Trigger: dump (\w+)$", head, re.M)
        summary = re.search(r"^summary: (\d+)$", head, re.M)
        if trigger and summary:
            totals[trigger.group(1)] = int(summary.group(1))
    idle_rate = totals["idle"] / timings["idle"][1]
    return {
        name: (totals[name] / n, (totals[name] - idle_rate * seconds) / n)
        for name, (n, seconds) in timings.items()
        if name != "idle"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path("."))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scale", default="1.0", help="the loaded benchmark dataset's scale")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    dsn = parse_args(["--scale", args.scale])[0].database_url("reviews")
    redis_port = free_port()
    with tempfile.TemporaryDirectory(prefix="runway-ir-") as tmp:
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            for i in range(1, args.rounds + 1):
                for label, checkout in (("before", args.before), ("after", args.after)):
                    subprocess.run(
                        ["redis-cli", "-p", str(redis_port), "flushall"],
                        capture_output=True,
                        check=False,
                    )
                    for name, (gross, net) in measure(
                        checkout.resolve(), dsn, f"redis://127.0.0.1:{redis_port}/0", Path(tmp)
                    ).items():
                        print(
                            f"round {i} {label:6} {name:5}: {gross / 1000:7.1f} k instructions"
                            f" per request gross, {net / 1000:7.1f} k net of background",
                            flush=True,
                        )
        finally:
            redis.terminate()
            redis.wait()


if __name__ == "__main__":
    main()
