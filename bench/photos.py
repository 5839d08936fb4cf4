"""Photo serving and upload, measured on their own (not part of `make bench`;
never while another benchmark runs): one photos instance on a local store and
the gateway rendered as the stack renders it (rate limit off), next to the
bench's ceiling NGINX (bench/nginx-ceiling.conf.template, `/fixed`).

    python -m bench.photos [--seconds 10] [--upload-seconds 15] [--concurrency 4] [--store s3]

--store s3: the photos instance on a bucket of a moto_server process (a real
S3 endpoint, from moto[server]) and the gateway in S3 mode, serving through
its proxy_cache (the first GET fills it; wrk then measures cache hits).

1. GET of a stored photo (full image and thumbnail) through the gateway, the
   gateway's own static /openapi.json, and the ceiling's fixed body, each
   `wrk -t2 -c64 -d<seconds>s --latency`.
2. Uploads of a 2 MB, 12-megapixel phone JPEG (EXIF GPS and orientation),
   each a different file (a JPEG comment with a counter, so none is found
   already stored), from `concurrency` clients: uploads/s and latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from bench.env import CEILING_BODY
from gateway import render
from tests.conftest import free_port
from tests.gateway.harness import ServiceInstance, wait_http
from tests.photos import images

BENCH_DIR = Path(__file__).resolve().parent


def wrk(url: str, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+([\d.]+\w+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def ceiling_nginx(run_dir: Path, port: int) -> subprocess.Popen[bytes]:
    (run_dir / "tmp").mkdir(parents=True, exist_ok=True)
    values = {"run_dir": str(run_dir), "port": str(port), "body": CEILING_BODY}
    values |= {"bare_port": str(free_port()), "query_port": str(free_port())}
    text = (BENCH_DIR / "nginx-ceiling.conf.template").read_text()
    conf = run_dir / "nginx.conf"
    conf.write_text(re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text))
    return subprocess.Popen(
        [render.NGINX, "-p", str(run_dir), "-c", str(conf), "-g", "daemon off;"]
    )


def variant(jpeg: bytes, i: int) -> bytes:
    """The same pixels with a comment segment after SOI: other bytes, other name."""
    comment = f"bench upload {i}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


async def uploads(port: int, jpeg: bytes, seconds: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(10**9))
    deadline = time.monotonic() + seconds
    headers = {"Content-Type": "image/jpeg"}

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            i = next(counter)
            body = variant(jpeg, i)  # a 2 MB copy: about a millisecond
            start = time.perf_counter()
            async with session.post(
                f"http://127.0.0.1:{port}/photos", data=body, headers=headers
            ) as r:
                await r.read()
            latencies.append(time.perf_counter() - start)
            statuses[r.status] = statuses.get(r.status, 0) + 1

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    return {
        "uploads_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "statuses": statuses,
    }


async def upload_once(port: int, jpeg: bytes) -> dict[str, str]:
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/photos"
        async with session.post(url, data=jpeg, headers={"Content-Type": "image/jpeg"}) as r:
            assert r.status == 201, await r.text()
            return await r.json()


def moto_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).parent / "moto_server"
    with log.open("wb") as out:
        process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out)
    wait_http(f"http://127.0.0.1:{port}/moto-api/")
    return process


def s3_bucket(endpoint: str) -> dict[str, str]:
    """A fresh bucket on `endpoint`; the photos instance's S3 settings for it."""
    import boto3  # dev dependency (moto's)

    keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)
    client.create_bucket(Bucket="runway-photos-bench")
    return {
        "S3_BUCKET": "runway-photos-bench",
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--upload-seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", default="2", help="PHOTOS_WORKERS")
    parser.add_argument("--store", choices=("local", "s3"), default="local")
    args = parser.parse_args()
    if subprocess.run(["pgrep", "-f", "bench.run|wrk "], capture_output=True).returncode == 0:
        sys.exit("another benchmark is running: not measuring beside it")

    work = Path(tempfile.mkdtemp(prefix="runway-photos-bench-"))
    work.chmod(0o755)  # nginx's workers (nobody under root) read the store
    store = work / "store"
    gateway_port, photos_port, ceiling_port = free_port(), free_port(), free_port()
    env = {"PHOTOS_DIR": str(store), "PHOTOS_WORKERS": args.workers, "PHOTOS_STORE": args.store}
    env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{gateway_port}"
    photos = ServiceInstance("photos", photos_port, env, work / "photos.log")
    gw_env = {
        "GATEWAY_PORT": str(gateway_port),
        "GATEWAY_STATUS_PORT": str(free_port()),
        "GATEWAY_RATE_LIMIT": "off",
        "PHOTOS_PORT": str(photos_port),
        "PHOTOS_DIR": str(store),
        "GATEWAY_ACCESS_LOG": "off",  # as the benchmark's gateway: no per-request disk write
        "PHOTOS_STORE": args.store,
    }
    gateway = render.GatewayConfig.from_env(work / "gateway", gw_env)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if args.store == "s3":
            moto_port = free_port()
            processes.append(moto_server(moto_port, work / "moto.log"))
            env |= s3_bucket(f"http://127.0.0.1:{moto_port}")
        photos.start()
        render.write(gateway)
        processes.append(subprocess.Popen(render.nginx_command(gateway, "-g", "daemon off;")))
        processes.append(ceiling_nginx(work / "ceiling", ceiling_port))
        wait_http(f"http://127.0.0.1:{gateway.status_port}/healthz")
        wait_http(f"http://127.0.0.1:{ceiling_port}/fixed")

        jpeg = images.phone_jpeg(4032, 3024, orientation=6, quality=82, noise=0.1)
        results: dict[str, object] = {"upload_bytes": len(jpeg)}
        urls = asyncio.run(upload_once(gateway_port, jpeg))
        name, thumb = (urls[k].rsplit("/", 1)[1] for k in ("url", "thumbnail_url"))
        base = f"http://127.0.0.1:{gateway_port}/photos/"
        results["full_bytes"] = len(urllib.request.urlopen(base + name).read())
        results["thumbnail_bytes"] = len(urllib.request.urlopen(base + thumb).read())
        results["get_thumbnail"] = wrk(base + thumb, args.seconds)
        results["get_full"] = wrk(base + name, args.seconds)
        # The same gateway's own static file (its headers, maps, one worker).
        results["gateway_openapi_json"] = wrk(
            f"http://127.0.0.1:{gateway_port}/openapi.json", args.seconds
        )
        results["ceiling_nginx"] = wrk(f"http://127.0.0.1:{ceiling_port}/fixed", args.seconds)
        results["upload"] = asyncio.run(
            uploads(gateway_port, jpeg, args.upload_seconds, args.concurrency)
        )
        results["upload"]["concurrency"] = args.concurrency
        print(json.dumps(results, indent=2))
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        photos.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
