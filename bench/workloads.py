"""The workloads (ceilings, W1-W4) as data, and how one is measured: caches
scraped before and after, processes sampled during, wrk's summary checked.

Operation names are the ones bench/lua/workload.lua knows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import scrape
from . import wrk as wrk_mod
from .config import BenchConfig
from .env import Processes
from .procs import Sampler

# Which service answers each operation (a mix drops what is not running).
OP_SERVICE = {
    "product": "overview",
    "styles": "overview",
    "related": "overview",
    "reviews_relevant": "reviews",
    "reviews_newest": "reviews",
    "reviews_helpful": "reviews",
    "meta": "reviews",
    "post_review": "reviews",
    "review_helpful": "reviews",
    "review_report": "reviews",
    "questions": "qa",
    "answers": "qa",
    "post_question": "qa",
    "post_answer": "qa",
    "question_helpful": "qa",
    "question_report": "qa",
    "answer_helpful": "qa",
    "answer_report": "qa",
}
# Which Lua pool argument each operation draws its id from.
OP_POOL = {
    **dict.fromkeys(("product", "styles", "related", "meta", "questions"), "products"),
    **dict.fromkeys(("reviews_relevant", "reviews_newest", "reviews_helpful"), "products"),
    "answers": "questions",
    "post_review": "wproducts",
    "post_question": "wproducts",
    "post_answer": "wquestions",
    "review_helpful": "wreviews",
    "review_report": "wreviews",
    "question_helpful": "wquestions",
    "question_report": "wquestions",
    "answer_helpful": "wanswers",
    "answer_report": "wanswers",
    "query": "reviews",
}
WRITE_OPS = frozenset(
    op for op in OP_POOL if op.startswith("post_") or op.endswith(("_helpful", "_report"))
) - {"reviews_helpful"}

# The front end's product page: the product, its styles and related ids, then
# a card (product, styles, meta) per related product, the reviews list in the
# chosen sort, the meta, the questions and some answers lists.
READ_MIX = {
    "product": 3,
    "styles": 3,
    "related": 1,
    "reviews_relevant": 2,
    "reviews_newest": 1,
    "reviews_helpful": 1,
    "meta": 3,
    "questions": 2,
    "answers": 1,
}
# Writes of every kind, plus reads of the pages they invalidate (the same
# products): about 60% writes.
WRITE_MIX = {
    "post_review": 3,
    "post_question": 3,
    "post_answer": 3,
    "review_helpful": 3,
    "review_report": 1,
    "question_helpful": 3,
    "question_report": 1,
    "answer_helpful": 3,
    "answer_report": 1,
    "reviews_relevant": 2,
    "reviews_newest": 1,
    "meta": 3,
    "questions": 3,
    "answers": 2,
}
# W4: each read endpoint alone (the three sorts are one endpoint).
W4_ENDPOINTS = {
    "product": {"product": 1},
    "styles": {"styles": 1},
    "related": {"related": 1},
    "reviews": {"reviews_relevant": 1, "reviews_newest": 1, "reviews_helpful": 1},
    "meta": {"meta": 1},
    "questions": {"questions": 1},
    "answers": {"answers": 1},
}

ERROR_BUDGET = 0.001  # a workload above 0.1% errors fails the run


@dataclass(slots=True)
class Workload:
    name: str
    title: str
    ops: dict[str, int]
    pools: dict[str, Path]
    duration_s: int
    on_ceiling: bool = False  # sent to the ceiling NGINX instead of the gateway
    rate: int = 0
    ceiling: str | None = None  # the ceiling its throughput is compared with
    flush_first: bool = False
    marker: str = "bench"
    connections: int | None = None
    # Cold reads: each read id at most once a pass over its (shuffled) pool,
    # across the run's walked workloads (Processes.walk_from, workload.lua).
    walk: bool = False


@dataclass(slots=True)
class Result:
    workload: Workload
    summary: dict[str, Any]
    usage: dict[str, Any]
    cache: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.summary["duration_us"] / 1e6

    @property
    def rps(self) -> float:
        return self.summary["requests"] / self.seconds

    def ops(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.summary["ops"].items() if k != "?" or v.get("bad")}

    def counts(self) -> tuple[int, int, int]:
        """(checked responses, bad responses, socket errors)."""
        ops = self.ops()
        ok = sum(o.get("ok", 0) for o in ops.values())
        bad = sum(o.get("bad", 0) for o in ops.values())
        e = self.summary["errors"]
        return ok + bad, bad, e["connect"] + e["read"] + e["write"] + e["timeout"]

    def _at_rate(self, p995_ms: float) -> dict[str, Any]:
        """For a paced run: how late sends left wrk (queued behind slow answers,
        a wait wrk does not time) and the p99 bound that charges it: at most
        0.5% of requests took longer than p99.5, at most 0.5% were sent later
        than the lateness p99.5, so at most 1% exceeded their sum."""
        late = self.summary.get("lateness_ms")
        if not late:
            return {}
        edges = sorted((int(k[2:]), n) for k, n in late.items() if k.startswith("le"))
        sends = sum(n for _, n in edges) + late.get("inf", 0)
        seen, late_p995 = 0, None  # None: beyond the last bucket (over a second)
        late_p995: float | None
        for edge, n in edges:
            seen += n
            if seen >= 0.995 * sends:
                late_p995 = float(edge)
                break
        over_10 = sum(n for edge, n in edges if edge > 10) + late.get("inf", 0)
        return {
            "lateness": {
                "sends": sends,
                "p995_ms": late_p995,
                "late_over_10ms_ratio": round(over_10 / max(1, sends), 5),
            },
            "p99_bound_ms": None if late_p995 is None else round(p995_ms + late_p995, 2),
        }

    def writes_per_s(self) -> float:
        ok = sum(o.get("ok", 0) for op, o in self.ops().items() if op in WRITE_OPS)
        return ok / self.seconds

    def to_json(self) -> dict[str, Any]:
        checked, bad, socket = self.counts()
        lat = self.summary["latency_us"]
        pct = lat["percentiles"]
        return {
            "name": self.workload.name,
            "title": self.workload.title,
            "target": "ceiling" if self.workload.on_ceiling else "gateway",
            "ops": self.workload.ops,
            "duration_s": round(self.seconds, 2),
            "rate_target": self.workload.rate or None,
            "requests": self.summary["requests"],
            "rps": round(self.rps, 1),
            "writes_per_s": round(self.writes_per_s(), 1) if self.writes_per_s() else None,
            "latency_ms": {
                "p50": pct["50"] / 1000,
                "p90": pct["90"] / 1000,
                "p99": pct["99"] / 1000,
                "p995": pct["99.5"] / 1000,
                "p999": pct["99.9"] / 1000,
                "max": lat["max"] / 1000,
                "mean": round(lat["mean"] / 1000, 3),
            },
            "errors": {
                "socket": self.summary["errors"],
                "bad_responses": bad,
                "checked_responses": checked,
                "ratio": round((bad + socket) / max(1, self.summary["requests"]), 6),
                "samples": self.summary.get("bad_samples") or [],
            },
            **self._at_rate(pct["99.5"] / 1000),
            "by_op": self.ops(),
            "cache": self.cache,
            "cpu_pct": self.usage["cpu_pct"],
            "cpu_s": self.usage["cpu_s"],
            "peak_rss_mb": self.usage["peak_rss_mb"],
            "ceiling": self.workload.ceiling,
            "failures": self.failures,
            **self.extra,
        }


def mix_for(ops: dict[str, int], services: tuple[str, ...], pools: dict[str, Path]) -> dict:
    """The mix without operations whose service is not running or pool is empty."""
    kept = {}
    for op, weight in ops.items():
        service = OP_SERVICE.get(op)
        if service is not None and service not in services:
            continue
        pool = pools.get(OP_POOL.get(op, ""))
        if OP_POOL.get(op) and (pool is None or pool.stat().st_size == 0):
            continue
        kept[op] = weight
    return kept


def check(result: Result) -> list[str]:
    """The harness's honesty checks: errors within budget, and the timed
    responses were the expected statuses with plausible bodies."""
    failures = []
    checked, bad, socket = result.counts()
    requests = result.summary["requests"]
    if requests == 0 or checked == 0:
        failures.append("no responses were checked")
    elif (bad + socket) / requests > ERROR_BUDGET:
        samples = "; ".join(result.summary.get("bad_samples") or [])
        failures.append(
            f"{bad} bad responses and {socket} socket errors in {requests} requests"
            f" (> {ERROR_BUDGET:.1%}) {samples}"
        )
    return failures


def measure(cfg: BenchConfig, env: Processes, w: Workload) -> Result:
    if w.flush_first:
        env.flush_caches()
    url = f"http://127.0.0.1:{cfg.ceiling_nginx_port}" if w.on_ceiling else cfg.gateway_url
    ports = [] if w.on_ceiling else [p for s in cfg.services for p in cfg.instance_ports(s)]
    before = scrape.scrape_cache(ports)
    sampler = Sampler(env.groups).start()
    proc = wrk_mod.start(
        wrk_mod.WrkRun(
            url=url,
            ops=w.ops,
            pools={k: v for k, v in w.pools.items() if v is not None},
            duration_s=w.duration_s,
            threads=cfg.threads,
            connections=w.connections or cfg.connections,
            rate=w.rate,
            marker=w.marker,
            walk_from=env.walk_from if w.walk else None,
        )
    )
    try:
        out = wrk_mod.finish(proc)
    finally:
        usage = sampler.stop()
    after = scrape.scrape_cache(ports)
    if w.walk:  # each thread took about its share of the requests
        env.walk_from += -(-out.summary["requests"] // cfg.threads)
    cpu_s = {**usage.cpu_s, "wrk": out.cpu_s}
    seconds = usage.seconds
    result = Result(
        workload=w,
        summary=out.summary,
        usage={
            "cpu_s": cpu_s,
            "cpu_pct": {g: round(100 * s / max(seconds, 1e-9), 1) for g, s in cpu_s.items()},
            "peak_rss_mb": {
                label: round(rss / 2**20, 1)
                for label, rss in usage.peak_rss.items()
                if label.split("-")[0] in OP_SERVICE.values()
            },
        },
        cache=scrape.hit_ratio(before, after) if ports else {},
    )
    if ports:
        result.extra["gc"] = scrape.gc_pauses(before, after)
        result.extra["loop_lag"] = scrape.loop_lag(before, after)
        # The same less the time each process waited for a CPU: its own stalls.
        result.extra["loop_lag_net"] = scrape.loop_lag(before, after, "lagnet")
        reads = scrape.db_reads(before, after)
        if reads:
            result.extra["db_reads"] = reads
    result.failures = check(result)
    return result
