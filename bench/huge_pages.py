"""Huge pages for Postgres's buffers in the benchmark: the kernel's side.

Why: on 4 kB pages, 12 GB of shared_buffers are three million pages. Every
backend maps the ones it touches page by page, and a cold walk touches them
all over: page faults and TLB misses that 2 MB pages mostly spare. At SCALE
1.0, on huge pages, Postgres spent 15-27% less CPU on the questions,
answers and meta pages (docs/decisions/0060). Postgres's
default `huge_pages = try` uses huge pages when the kernel holds enough of
them, and a fresh machine holds none (vm.nr_hugepages = 0).

The invariant: `reserve` only ever raises the kernel's pool to what is asked
(never lowers it), and says how many the kernel actually holds, which may
be fewer (no root, or no contiguous memory even after the page cache is
dropped). Postgres then falls back to 4 kB pages by itself (`try`), and
`committed` tells which it did. Only `release`, for an A/B's 4 kB side,
lowers the pool, and the kernel keeps any page still mapped.
"""

from __future__ import annotations

import os
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo's HugePages_* counts (pages)."""
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("HugePages_"):
            out[name.removeprefix("HugePages_")] = int(value.split()[0])
    return out


def _counts() -> dict[str, int]:
    try:
        return meminfo(MEMINFO.read_text())
    except OSError:
        return {}


def held() -> int:
    """Huge pages the kernel holds (free or not)."""
    return _counts().get("Total", 0)


def committed(counts: dict[str, int] | None = None) -> int:
    """Huge pages that programs have mapped: in use, or reserved by a mapping
    not yet touched (Postgres reserves its whole shared memory at start)."""
    c = _counts() if counts is None else counts
    return c.get("Total", 0) - c.get("Free", 0) + c.get("Rsvd", 0)


def _ask(pages: int) -> None:
    try:
        NR_HUGEPAGES.write_text(str(pages))
    except OSError:
        pass  # not root: the kernel's pool stays as it is


def reserve(pages: int) -> int:
    """At least `pages` huge pages in the kernel's pool if it can find them;
    returns how many it holds. The page cache is dropped once when the first
    ask falls short (free memory is there, but in the cache's pages)."""
    if held() >= pages:
        return held()
    _ask(pages)
    if held() < pages:
        os.sync()
        try:
            DROP_CACHES.write_text("3")
        except OSError:
            return held()
        _ask(pages)
    return held()


def release() -> None:
    """Give the kernel's free huge pages back (pages still mapped stay until
    their program lets go): for BENCH_HUGE_PAGES=0 only."""
    _ask(0)
