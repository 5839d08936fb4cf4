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
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
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
    """Writes pre-formatted CSV text blocks (built with str.join by the caller,
    the fast path) to a file after its header, counting rows for the bar."""

    def __init__(
        self, path: Path, header: Sequence[str], total_rows: int, position: int = 0
    ) -> None:
        self.path = Path(path)
        self.header = ",".join(header) + "\n"
        self.rows = 0
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.close()
        self._file.close()


def run_parallel(
    tasks: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], workers: int
) -> list[Any]:
    """Run (function, args) tasks over `workers` forked processes and return
    their results in order. Args are pickled, so keep them small: big plan
    arrays belong in a module global set *before* this call, which forked
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


def write_manifest(out: Path, manifest: dict[str, Any], started: float, planned: float) -> dict:
    """Add the timings and write generator.json: what the files hold, and what
    the loader must repair or reject in them (the tests compare the two)."""
    manifest["seconds"] = {
        "plan": round(planned, 2),
        "total": round(time.perf_counter() - started, 2),
    }
    (out / "generator.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def generator_main(
    generate: Callable[..., dict[str, Any]], service: str, description: str, argv: list[str] | None
) -> None:
    """The command line every service's generator shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", type=float, default=0.01, help="1.0 = the full export")
    parser.add_argument("--out", type=Path, default=Path("data") / service)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: 2)")
    args = parser.parse_args(argv)
    manifest = generate(args.out, args.scale, args.seed, args.workers)
    rows = ", ".join(f"{name} {n:,}" for name, n in manifest["rows"].items())
    print(f"wrote {rows} to {args.out} in {manifest['seconds']['total']:.1f}s", file=sys.stderr)


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
