"""Generator mechanics shared by the services' synthetic-export generators.

Deterministic: every random stream comes from `rng_for(seed, label)`, so a
file's content depends only on the seed and its label, whichever process
writes it and in whatever order. Output follows the export's quirks: strings
always quoted with doubled inner quotes (commas and newlines kept inside),
numbers and booleans bare, SQL NULL as the bare word `null`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from types import TracebackType
from typing import Any

from tqdm import tqdm

NULL_FIELD = "null"  # the export's bare, unquoted null


def rng_for(seed: int, *labels: str) -> random.Random:
    """An independent, reproducible stream for (seed, labels)."""
    digest = hashlib.sha256(":".join([str(seed), *labels]).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def quote(text: str) -> str:
    """A CSV string field as the export writes it: always quoted."""
    return '"' + text.replace('"', '""') + '"'


def sentence(vocabulary: Sequence[str], rnd: Callable[[], float], words: int) -> str:
    """`words` words drawn from `vocabulary`, the first capitalised."""
    text = " ".join(vocabulary[int(rnd() * len(vocabulary))] for _ in range(words))
    return text[0].upper() + text[1:]


def paragraph(vocabulary: Sequence[str], rng: random.Random, chars: int, min_words: int) -> str:
    """Sentences of `min_words` to `min_words` + 11 words, each ending in `.`,
    `!`, `, and` or `?`, until at least `chars` characters."""
    rnd = rng.random
    parts: list[str] = []
    size = 0
    while size < chars:
        s = sentence(vocabulary, rnd, min_words + int(rnd() * 12)) + rng.choice(
            (".", "!", ", and", "?")
        )
        parts.append(s)
        size += len(s) + 1
    return " ".join(parts)


EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "hotmail.com", "example.com", "outlook.com")


def pick_table(
    weights: Sequence[float], values: Sequence[Any] | None = None, resolution: int = 1024
) -> list[Any]:
    """A lookup table for fast weighted draws: table[int(rng.random() * len)]
    costs one random() call instead of random.choices' Python overhead."""
    values = list(range(len(weights))) if values is None else list(values)
    total = float(sum(weights))
    table: list[Any] = []
    acc = 0.0
    for value, weight in zip(values, weights, strict=True):
        acc += weight
        table.extend([value] * (round(acc / total * resolution) - len(table)))
    return table


def skewed_counts(
    rng: random.Random,
    groups: int,
    total: int,
    *,
    zero_share: float = 0.1,
    heavy_share: float = 0.0002,
    heavy_weight: tuple[float, float] = (300, 1000),
) -> array:
    """Split `total` rows over `groups` (e.g. reviews over products) the way the
    real exports look: `zero_share` of the groups get none, most get a few
    (exponential), about `heavy_share` get hundreds to thousands. The counts
    sum to exactly `total`."""
    weights = [0.0] * groups
    for g in range(groups):
        r = rng.random()
        if r < zero_share:
            continue
        if r > 1.0 - heavy_share:
            weights[g] = rng.uniform(*heavy_weight)
        else:
            weights[g] = rng.expovariate(1.0)
    wsum = sum(weights)
    counts = array("i", bytes(4 * groups))
    if total <= 0 or wsum == 0:
        return counts
    per = total / wsum
    given = 0
    for g, w in enumerate(weights):
        if w:
            counts[g] = c = int(w * per)
            given += c
    # Hand the rounding remainder to random groups that already have rows.
    nonzero = [g for g, w in enumerate(weights) if w]
    for _ in range(total - given):
        counts[nonzero[int(rng.random() * len(nonzero))]] += 1
    return counts


def ids_with_gaps(
    rng: random.Random, n: int, gap_rate: float = 0.01, max_gap: int = 3, first: int = 1
) -> array:
    """n increasing ids starting at `first`, skipping 1..max_gap ids now and then
    (deleted rows in the source system)."""
    ids = array("i", bytes(4 * n))
    rnd, nxt = rng.random, first
    for k in range(n):
        ids[k] = nxt
        nxt += 1
        if rnd() < gap_rate:
            nxt += 1 + int(rnd() * max_gap)
    return ids


def progress(total: int, desc: str, position: int = 0) -> tqdm:
    """A rows progress bar, silent when stderr is not a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit=" rows",
        unit_scale=True,
        position=position,
        leave=False,
        disable=not sys.stderr.isatty(),
    )


class CsvOut:
    """Writes a file's header, then its lines in batches, counting rows for
    the bar. A writer appends pre-formatted lines (built with one f-string
    each over pre-quoted pools, the fast path) to `lines`, bound once as
    `add = w.lines.append`, and calls `flush()` between groups of rows: it
    writes the batch once BATCH lines are waiting. Leaving the `with` block
    writes the rest; `counts()` is then the writer's result."""

    BATCH = 20_000

    def __init__(
        self, path: Path, header: Sequence[str], total_rows: int, position: int = 0
    ) -> None:
        self.path = Path(path)
        self.header = ",".join(header) + "\n"
        self.rows = 0
        self.lines: list[str] = []
        self._bar = progress(total_rows, self.path.name, position)
        self._file: Any = None

    def __enter__(self) -> CsvOut:
        self._file = open(self.path, "w", encoding="utf-8", newline="")  # closed in __exit__
        self._file.write(self.header)
        return self

    def write(self, lines: list[str]) -> None:
        """Write a batch of complete lines (each ending in '\\n')."""
        self._file.write("".join(lines))
        self.rows += len(lines)
        self._bar.update(len(lines))

    def flush(self) -> None:
        """Write the waiting lines once there are a batch of them."""
        if len(self.lines) >= self.BATCH:
            self.write(self.lines)
            self.lines.clear()

    def counts(self, **extra: int) -> dict[str, int]:
        """{file name: rows written, **extra} (after the `with` block)."""
        return {self.path.name: self.rows, **extra}

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.write(self.lines)
                self.lines.clear()
        finally:
            self._bar.close()
            self._file.close()


def run_parallel(
    tasks: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], workers: int
) -> list[Any]:
    """Run (function, args) tasks over `workers` forked processes and return
    their results in order. Args are pickled, so keep them small: big plan
    arrays belong in a PlanSlot set *before* this call, which forked
    workers then share copy-on-write (generators hold no threads or sockets
    when they fork)."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(*args) for fn, args in tasks]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        futures = [pool.submit(fn, *args) for fn, args in tasks]
        return [f.result() for f in futures]


def run_writers(
    tasks: Sequence[tuple[Callable[..., dict[str, int]], tuple[Any, ...]]],
    workers: int | None = None,
) -> dict[str, int]:
    """Run a generator's file writers (list the biggest first, so that two
    workers finish close together) and merge the counts they return."""
    counts: dict[str, int] = {}
    for result in run_parallel(tasks, workers or min(2, os.cpu_count() or 1)):
        counts.update(result)
    return counts


class PlanSlot:
    """Where a generator's writers find the plan: set by ExportGenerator just
    *before* the workers fork, so that they share it copy-on-write instead of
    unpickling big arrays, and cleared once they are done."""

    def __init__(self) -> None:
        self.plan: Any = None

    def get(self) -> Any:
        assert self.plan is not None, "make_plan() before writing"
        return self.plan


def write_manifest(out: Path, manifest: dict[str, Any], started: float, planned: float) -> dict:
    """Add the timings and write generator.json: what the files hold, and what
    the loader must repair or reject in them (the tests compare the two)."""
    manifest["seconds"] = {
        "plan": round(planned, 2),
        "total": round(time.perf_counter() - started, 2),
    }
    (out / "generator.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


Writer = Callable[[Path, int], dict[str, int]]


@dataclass(frozen=True)
class ExportGenerator:
    """A service's generator: `generate(out, scale, seed, workers)` from
    Python, `generate.main(argv)` as `python -m services.<service>.data.generator`.

    `make_plan(scale, seed)` draws what the files must agree on into `slot`
    (its `.products` is the product count); the `writers` (out, position)
    then write one or more files each over forked workers, listed biggest
    first so that two workers finish close together, and return their counts;
    `quirks(plan, counts)` says what generator.json adds after seed, scale,
    products and the rows of each file in `headers`."""

    service: str
    doc: str
    headers: Mapping[str, Sequence[str]]
    make_plan: Callable[[float, int], Any]
    slot: PlanSlot
    writers: Sequence[Writer]
    quirks: Callable[[Any, dict[str, int]], dict[str, Any]]

    def __call__(
        self, out: Path | str, scale: float, seed: int = 1, workers: int | None = None
    ) -> dict[str, Any]:
        """Write the files (and generator.json) into `out`; returns the manifest."""
        started = time.perf_counter()
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.slot.plan = plan = self.make_plan(scale, seed)
        planned = time.perf_counter() - started
        try:
            counts = run_writers([(w, (out, i)) for i, w in enumerate(self.writers)], workers)
        finally:
            self.slot.plan = None
        manifest = {
            "seed": seed,
            "scale": scale,
            "products": plan.products,
            "rows": {name: counts[name] for name in self.headers},
            **self.quirks(plan, counts),
        }
        return write_manifest(out, manifest, started, planned)

    def main(self, argv: list[str] | None = None) -> None:
        """The command line every service's generator shares."""
        parser = argparse.ArgumentParser(description=self.doc.split("\n\n")[0])
        parser.add_argument("--scale", type=float, default=0.01, help="1.0 = the full export")
        parser.add_argument("--out", type=Path, default=Path("data") / self.service)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--workers", type=int, default=None, help="processes (default: 2)")
        args = parser.parse_args(argv)
        manifest = self(args.out, args.scale, args.seed, args.workers)
        rows = ", ".join(f"{name} {n:,}" for name, n in manifest["rows"].items())
        total = manifest["seconds"]["total"]
        print(f"wrote {rows} to {args.out} in {total:.1f}s", file=sys.stderr)


def photo_url_pool(rng: random.Random, count: int = 4096) -> list[str]:
    """Quoted photo URLs shaped like the export's (the writers draw from the pool)."""
    return [
        quote(
            f"https://images.unsplash.com/photo-{1_500_000_000_000 + rng.randrange(10**11)}"
            f"-{rng.getrandbits(48):012x}?ixlib=rb-1.2.1&auto=format&fit=crop"
            f"&w={rng.randrange(300, 2000)}&q=80"
        )
        for _ in range(count)
    ]


def write_photo_rows(
    path: Path,
    header: Sequence[str],
    position: int,
    seed: int,
    parent_ids: array,
    per_parent: Sequence[int],
    photos_per_parent: float,
    marked: set[int],
    null_rate: float = 0.0,
) -> tuple[dict[str, int], int, int]:
    """A photos file of `id,<parent>_id,url` rows (reviews_photos.csv,
    answers_photos.csv): for each parent position a draw from the `per_parent`
    table (1024 entries) of how many photos, ids with gaps, urls from
    photo_url_pool or, at `null_rate`, a bare null. Returns the file's counts,
    the photos of the `marked` parent positions (which the loader must reject
    with their parent) and the null urls."""
    rng = rng_for(seed, "photos")
    rnd = rng.random
    urls = photo_url_pool(rng)
    marked_photos = null_urls = 0
    nxt = 1
    with CsvOut(path, header, round(len(parent_ids) * photos_per_parent), position) as w:
        add = w.lines.append
        for k in range(len(parent_ids)):
            n = per_parent[int(rnd() * 1024)]
            if not n:
                continue
            parent = parent_ids[k]
            for _ in range(n):
                if null_rate and rnd() < null_rate:
                    url = NULL_FIELD
                    null_urls += 1
                else:
                    url = urls[int(rnd() * 4096)]
                add(f"{nxt},{parent},{url}\n")
                nxt += 2 if rnd() < 0.01 else 1  # id gaps
            if k in marked:
                marked_photos += n
            w.flush()
    return w.counts(), marked_photos, null_urls
