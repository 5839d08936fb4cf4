"""`make bench`: the performance record (issue 6), and the soak (issue 7).

    python -m bench.run --scale 1.0            # the full run (about 20 minutes)
    python -m bench.run --quick                # scale 0.01, seconds per workload
    python -m bench.run --scale 1.0 --soak     # the above plus the 10-minute soak

Ensures the dataset at SCALE is generated and loaded into the benchmark
databases (reused when already there), starts its own Redis and the stack as
`make up` does (gateway rate limit off), the ceilings, then runs the
workloads through the gateway with wrk and writes bench/results/<run>.json,
.md and two PNGs. Exits non-zero when a workload saw more than 0.1% errors,
when a timed response was not the expected status with a plausible body, or
when an acknowledged write is missing from the database. See bench/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common.settings import SERVICES

from . import data, pgtune, report, soak, verify
from .config import FULL, QUICK, BenchConfig
from .env import Processes
from .report import TARGETS
from .workloads import (
    READ_MIX,
    W4_ENDPOINTS,
    WRITE_MIX,
    WRITE_OPS,
    Result,
    Workload,
    measure,
    mix_for,
)

QUICK_SCALE = "0.01"


def parse_args(argv: list[str] | None) -> tuple[BenchConfig, dict[str, bool]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scale", default=None, help="dataset scale (default 1.0; --quick: 0.01)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="small scale, seconds per workload")
    p.add_argument("--soak", action="store_true", help="also the 10-minute soak (issue 7)")
    p.add_argument("--only-soak", action="store_true", help="the soak without W1-W4")
    p.add_argument("--services", help="comma-separated (default: all three)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="wrk threads")
    p.add_argument("--connections", type=int, default=64, help="wrk connections")
    p.add_argument("--w4-rate", type=int, default=1000)
    p.add_argument("--soak-rate", type=int, default=1000)
    p.add_argument("--port-offset", type=int, default=10000, help="added to every stack port")
    p.add_argument("--ceiling-procs", type=int, default=os.cpu_count() or 2)
    p.add_argument("--redis-url", help="use this Redis (default: start a private one)")
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        help="start a private Redis Cluster (3 primaries + 3 replicas, on the port\n"
        "offset + 6380-6385) instead of the single Redis; the services get\n"
        "REDIS_CLUSTER=1 and its seed node as REDIS_URL",
    )
    p.add_argument("--base-url", help="a gateway already running: start no stack")
    p.add_argument("--keep-up", action="store_true", help="leave the stack running")
    p.add_argument("--reload", action="store_true", help="reload the data even if present")
    p.add_argument("--results", type=Path, default=None, help="default bench/results")
    p.add_argument(
        "--only",
        help="comma-separated workload names or prefixes (e.g. W2,W3,ceiling): run just these",
    )
    p.add_argument(
        "--seconds", type=int, help="override every workload's duration (profiling, not records)"
    )
    a = p.parse_args(argv)
    if a.redis_cluster and (a.redis_url or a.base_url):
        p.error("--redis-cluster starts the stack's Redis: not with --redis-url or --base-url")
    services = tuple(a.services.split(",")) if a.services else SERVICES
    extra: dict[str, Any] = {"results_dir": a.results} if a.results else {}
    if a.only:
        extra["only"] = tuple(a.only.split(","))
    durations = QUICK if a.quick else FULL
    if a.seconds:
        durations = replace(
            durations,
            ceiling=a.seconds,
            warmup=min(durations.warmup, a.seconds),
            read=a.seconds,
            write=a.seconds,
            w4=a.seconds,
        )
    cfg = BenchConfig(
        scale=a.scale or (QUICK_SCALE if a.quick else "1.0"),
        seed=a.seed,
        quick=a.quick,
        soak=a.soak or a.only_soak,
        services=services,
        durations=durations,
        threads=a.threads,
        connections=a.connections,
        w4_rate=a.w4_rate,
        soak_rate=a.soak_rate,
        port_offset=a.port_offset,
        ceiling_procs=a.ceiling_procs,
        run_id=datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        external_redis=a.redis_url,
        redis_cluster=a.redis_cluster,
        base_url=a.base_url,
        keep_up=a.keep_up,
        **extra,
    )
    return cfg, {"reload": a.reload, "only_soak": a.only_soak}


# --- workload plans -------------------------------------------------------------------


def _lua_pools(pools: dict[str, Path], reads: str, writes: str | None = None) -> dict[str, Path]:
    """Lua pool arguments: reads from the `reads` sets, writes from `writes`."""
    out = {"products": pools[f"{reads}_products"], "questions": pools[f"{reads}_questions"]}
    if writes:
        out |= {
            "wproducts": pools[f"{writes}_products"],
            "wquestions": pools[f"{writes}_questions"],
            "wreviews": pools[f"{writes}_reviews"],
            "wanswers": pools[f"{writes}_answers"],
        }
    return out


def ceilings(cfg: BenchConfig, pools: dict[str, Path]) -> list[Workload]:
    d = cfg.durations.ceiling
    reviews = {"reviews": pools["sample_reviews"]}
    return [
        Workload("ceiling-nginx", "NGINX fixed body", {"fixed": 1}, {}, d, on_ceiling=True),
        Workload(
            "ceiling-bare",
            "NGINX → bare aiohttp",
            {"bare": 1},
            {},
            d,
            on_ceiling=True,
            ceiling="ceiling-nginx",
        ),
        Workload(
            "ceiling-query",
            "NGINX → aiohttp + 1 asyncpg query",
            {"query": 1},
            reviews,
            d,
            on_ceiling=True,
            ceiling="ceiling-bare",
        ),
    ]


def main_workloads(cfg: BenchConfig, pools: dict[str, Path]) -> list[Workload]:
    d = cfg.durations
    hot = _lua_pools(pools, "hot")
    cold = _lua_pools(pools, "all")
    w3 = _lua_pools(pools, "w3", "w3")
    # Each mix twice: as fast as it goes (throughput), then offered at its
    # target rate (the p99 targets; report.TARGETS says why).
    writes = sum(n for op, n in WRITE_MIX.items() if op in WRITE_OPS)
    w1_rate, w2_rate = int(TARGETS["W1"]["rps"]), int(TARGETS["W2"]["rps"])
    w3_rate = math.ceil(TARGETS["W3"]["writes_per_s"] * sum(WRITE_MIX.values()) / writes)
    plans = [
        Workload("W1-warmup", "hot reads warm-up", READ_MIX, hot, d.warmup),
        Workload("W1", "hot reads", READ_MIX, hot, d.read, ceiling="ceiling-bare"),
        Workload("W1-at-rate", f"hot reads at {w1_rate} rps", READ_MIX, hot, d.read, rate=w1_rate),
        Workload(
            "W2",
            "cold reads",
            READ_MIX,
            cold,
            d.read,
            ceiling="ceiling-query",
            flush_first=True,
            walk=True,
        ),
        Workload(
            "W2-at-rate",
            f"cold reads at {w2_rate} rps",
            READ_MIX,
            cold,
            d.read,
            rate=w2_rate,
            flush_first=True,
            walk=True,
        ),
        Workload(
            "W3",
            "writes + reads",
            WRITE_MIX,
            w3,
            d.write,
            ceiling="ceiling-query",
            marker=f"bench-{cfg.run_id}-w3",
        ),
        Workload(
            "W3-at-rate",
            f"writes + reads at {w3_rate} rps",
            WRITE_MIX,
            w3,
            d.write,
            rate=w3_rate,
            marker=f"bench-{cfg.run_id}-w3r",
        ),
    ]
    if any(name.startswith("cold-") for name in cfg.only):
        # W2 split by endpoint, each alone as fast as it goes against
        # ceiling-query (issue 21's per-route figures through the gateway).
        # Only when --only names them: a full run stays as it was.
        for endpoint, ops in W4_ENDPOINTS.items():
            plans.append(
                Workload(
                    f"cold-{endpoint}",
                    f"cold {endpoint}",
                    ops,
                    cold,
                    d.w4,
                    ceiling="ceiling-query",
                    flush_first=True,
                    walk=True,
                )
            )
    w4 = _lua_pools(pools, "w4")
    for endpoint, ops in W4_ENDPOINTS.items():
        plans.append(
            Workload(
                f"W4-{endpoint}",
                f"{endpoint} at {cfg.w4_rate} rps",
                ops,
                w4,
                d.w4,
                rate=cfg.w4_rate,  # judged by the rate held, not against a ceiling
                flush_first=True,
            )
        )
    return plans


def soak_workload(cfg: BenchConfig, pools: dict[str, Path]) -> Workload:
    mix = dict(READ_MIX)
    for op, weight in WRITE_MIX.items():
        if not op.endswith("_report"):  # ten minutes of reports would hide most rows
            mix[op] = mix.get(op, 0) + weight
    return Workload(
        "soak",
        f"W1+W3 at {cfg.soak_rate} rps",
        mix,
        _lua_pools(pools, "hot", "soak"),
        cfg.durations.soak,
        rate=cfg.soak_rate,
        ceiling="ceiling-bare",
        marker=f"bench-{cfg.run_id}-soak",
        connections=max(cfg.connections, 64),
    )


# --- running ---------------------------------------------------------------------------


# Workloads whose target is a ratio to a ceiling, and that ceiling: each is
# also measured back to back with it (paired_rounds; decisions 0009, 0052).
PAIRED_CEILING = {"W1": "ceiling-bare", "W2": "ceiling-query"}


def _run_one(cfg: BenchConfig, env: Processes, w: Workload) -> Result | None:
    w.ops = mix_for(w.ops, cfg.services, w.pools) if not w.on_ceiling else w.ops
    if not w.ops:
        data.log(f"{w.name}: no operation available with these services, skipped")
        return None
    rate = f" at {w.rate} rps" if w.rate else ""
    data.log(f"{w.name} ({w.title}): {w.duration_s}s{rate}")
    sums = verify.helpful_sums(cfg, w.pools) if w.marker != "bench" else {}
    result = measure(cfg, env, w)
    if w.marker != "bench":
        checks, failures = verify.verify(
            cfg, w.pools, w.marker, result.ops(), result.summary.get("recorded") or {}, sums
        )
        result.extra["verification"] = checks
        result.failures += failures
    j = result.to_json()
    data.log(
        f"  {j['rps']:,.0f} rps, p50 {j['latency_ms']['p50']:.2f} ms,"
        f" p99 {j['latency_ms']['p99']:.2f} ms, errors {j['errors']['ratio']:.3%},"
        f" cache hit {j['cache'].get('hit_ratio')}"
        + (f"  FAILED: {result.failures}" if result.failures else "")
    )
    return result


def run(cfg: BenchConfig, reload: bool, only_soak: bool) -> dict[str, Any]:
    env = Processes(cfg)
    started = time.time()
    results: list[Result] = []
    soak_report: dict[str, Any] | None = None
    postgres: dict[str, Any] = {}
    redis: dict[str, Any] = {}
    try:
        env.start_redis()
        if not cfg.base_url:
            for service in cfg.services:
                data.ensure_loaded(cfg, service, env.env, reload)
            # Before the stack starts: a restart would cut its pools' connections.
            buffers = pgtune.shared_buffers(cfg) if cfg.quick else pgtune.ensure_buffers(cfg)
            postgres = pgtune.prewarm(cfg, buffers)
        pools = data.build_pools(cfg)
        env.start_stack()
        env.start_ceilings()
        plans = ceilings(cfg, pools) + ([] if only_soak else main_workloads(cfg, pools))
        if cfg.only:
            plans = [w for w in plans if w.name.startswith(cfg.only)]
        for w in plans:
            result = _run_one(cfg, env, w)
            if result is not None:
                results.append(result)
                if w.name in PAIRED_CEILING:
                    ceiling = next(
                        c for c in ceilings(cfg, pools) if c.name == PAIRED_CEILING[w.name]
                    )
                    paired_rounds(cfg, env, w, ceiling, result)
        if cfg.soak:
            w = soak_workload(cfg, pools)
            w.ops = mix_for(w.ops, cfg.services, w.pools)
            data.log(
                f"soak ({w.title}): {w.duration_s}s, sampled every {cfg.durations.soak_sample}s"
            )
            sums = verify.helpful_sums(cfg, w.pools)
            result, soak_report = soak.run(cfg, env, w)
            checks, failures = verify.verify(
                cfg, w.pools, w.marker, result.ops(), result.summary.get("recorded") or {}, sums
            )
            result.extra["verification"] = checks
            result.failures += failures + _soak_failures(result, soak_report)
            results.append(result)
        redis = env.redis_summary()
    finally:
        env.stop_all()
    return _assemble(cfg, results, soak_report, postgres, redis, time.time() - started)


def paired_rounds(
    cfg: BenchConfig, env: Processes, w: Workload, ceiling: Workload, result: Result
) -> None:
    """A workload's ratio to its ceiling (PAIRED_CEILING), measured back to
    back: a few rounds of the ceiling then the workload, each round's ratio
    from runs seconds apart, and their median. On a shared VM, two runs
    minutes apart can differ by 20% on their own (ceiling-bare measured 11,345
    and 13,879 rps in two runs of the same code): the ceiling's row, measured
    minutes before, carries that drift into the ratio; a round's ratio carries
    only what changed within it. A workload that flushes the caches first
    (W2) flushes them before each of its rounds too, so every round is as
    cold as its main run. Adds `paired` to the workload's result;
    report.add_ratios takes its median."""
    d = cfg.durations
    rounds: list[dict[str, float]] = []
    data.log(
        f"{w.name} against {ceiling.name} back to back: {d.pair_rounds} rounds of"
        f" {d.pair_ceiling}s + {d.pair_read}s"
    )
    for _ in range(d.pair_rounds):
        top = measure(cfg, env, replace(ceiling, duration_s=d.pair_ceiling))
        mine = measure(cfg, env, replace(w, duration_s=d.pair_read))
        result.failures += [f"paired round: {f}" for f in top.failures + mine.failures]
        ratio = round(mine.rps / top.rps, 3)
        rounds.append({"ceiling_rps": round(top.rps, 1), "rps": round(mine.rps, 1), "ratio": ratio})
        data.log(f"  {ceiling.name} {top.rps:,.0f} rps, {w.name} {mine.rps:,.0f} rps: {ratio:.3f}")
    result.extra["paired"] = {
        "ceiling": ceiling.name,
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
    }


def _soak_failures(result: Result, soak_report: dict[str, Any]) -> list[str]:
    failures = [
        f"{c['what']} {c['first']} -> {c['last']} (limit {c['limit']})"
        for c in soak_report["checks"]
        if not c["ok"]
    ]
    _, bad, socket = result.counts()
    if bad or socket:  # the soak's budget is zero
        failures.append(f"{bad} bad responses, {socket} socket errors (budget 0)")
    return failures


def _assemble(
    cfg: BenchConfig,
    results: list[Result],
    soak_report: dict[str, Any] | None,
    postgres: dict[str, Any],
    redis: dict[str, Any],
    wall_s: float,
) -> dict[str, Any]:
    workloads = [r.to_json() for r in results if r.workload.name != "W1-warmup"]
    report.add_ratios(workloads)
    for w in workloads:
        w["targets"] = report.target_status(w)
    failures = [f"{w['name']}: {f}" for w in workloads for f in w["failures"]]
    return {
        "run_id": cfg.run_id,
        "scale": cfg.scale,
        "seed": cfg.seed,
        "quick": cfg.quick,
        "services": list(cfg.services),
        "gateway_url": cfg.gateway_url,
        "threads": cfg.threads,
        "connections": cfg.connections,
        "cpus": os.cpu_count(),
        "wall_s": round(wall_s, 1),
        "postgres": postgres,
        # "single" or "cluster 3+3": what two runs being compared differ in.
        "redis": cfg.redis_kind,
        "redis_detail": redis,
        "workloads": workloads,
        "soak": soak_report,
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> None:
    cfg, flags = parse_args(argv)
    run_report = run(cfg, **flags)
    paths = report.write(run_report, cfg.results_dir)
    print()
    print(paths["markdown"].read_text())
    for kind, path in paths.items():
        print(f"[bench] {kind}: {path}")
    if run_report["failures"]:
        print("[bench] FAILED:", *run_report["failures"], sep="\n  ", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
