"""bench/lua/workload.lua with walk=<from> (the cold workloads): each thread
takes the read ids in file order from its own stretch of the pool, `from` ids
in, so no id repeats until the threads together have taken the whole pool.
Random draws let a "cold" run find the cache warm (a per-route run at SCALE
0.1 was answered 3.6-34.5% from a cache; docs/decisions/0062)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from pathlib import Path

from aiohttp import web

from bench.wrk import WrkRun

POOL = 100_000
THREADS = 2
CONNECTIONS = 4
WALK_FROM = 1_234  # as if earlier walked runs had taken that many ids a thread


def _serve(seen: dict[tuple[str, int], list[int]]) -> web.Application:
    """Answers every read as workload.lua expects, and records the id of each
    request by op kind and wrk thread (from the X-Request-Id it sends)."""

    async def answer(request: web.Request) -> web.Response:
        rid = request.headers["X-Request-Id"]  # bw.<op>.<id>.<thread>.<seq>
        _, op, target, thread, _ = rid.split(".")
        seen[(op, int(thread))].append(int(target))
        body = b'{"features":[]}' if op == "product" else b'{"results":[]}'
        return web.Response(body=body, headers={"X-Request-Id": rid})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    return app


def _write(path: Path, ids: list[int]) -> Path:
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


async def test_a_walk_takes_each_threads_stretch_in_file_order(aiohttp_server, tmp_path) -> None:
    rng = random.Random(7)
    products = rng.sample(range(1, 10 * POOL), POOL)
    questions = rng.sample(range(1, 10 * POOL), POOL)
    seen: dict[tuple[str, int], list[int]] = defaultdict(list)
    server = await aiohttp_server(_serve(seen))
    run = WrkRun(
        url=f"http://127.0.0.1:{server.port}",
        ops={"product": 1, "answers": 1},
        pools={
            "products": _write(tmp_path / "p.txt", products),
            "questions": _write(tmp_path / "q.txt", questions),
        },
        duration_s=1,
        threads=THREADS,
        connections=CONNECTIONS,
        walk_from=WALK_FROM,
    )
    proc = await asyncio.create_subprocess_exec(
        *run.command(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()

    for op, pool in (("product", products), ("answers", questions)):
        for thread in range(1, THREADS + 1):
            ids = seen[(op, thread)]
            assert len(ids) >= 100, f"{op}, thread {thread}: {len(ids)} requests"
            assert len(ids) < POOL // THREADS  # the stretch did not wrap
            start = WALK_FROM + (thread - 1) * POOL // THREADS
            # Requests are answered out of order across a thread's connections
            # and the last ones may not arrive: the ids are the stretch's head.
            stretch = pool[start : start + len(ids) + CONNECTIONS]
            assert len(set(ids)) == len(ids), f"{op}, thread {thread}: an id repeated"
            assert set(ids) <= set(stretch), f"{op}, thread {thread}: ids off its stretch"
