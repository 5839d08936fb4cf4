"""bench/huge_pages.py: the kernel's huge page counts as /proc/meminfo gives
them, and what counts as Postgres's shared memory being on them."""

from __future__ import annotations

from bench.huge_pages import committed, meminfo

# Read off this machine with Postgres started on huge pages (12 GB of
# shared_buffers: it asked for 6,169 pages) and before it touched most of them.
POSTGRES_STARTED = """MemTotal:       24684600 kB
AnonHugePages:         0 kB
ShmemHugePages:        0 kB
HugePages_Total:    6400
HugePages_Free:     6270
HugePages_Rsvd:     6039
HugePages_Surp:        0
Hugepagesize:       2048 kB
Hugetlb:        13107200 kB
"""


def test_meminfo_reads_the_counts_in_pages_not_the_sizes() -> None:
    counts = meminfo(POSTGRES_STARTED)
    assert counts == {"Total": 6400, "Free": 6270, "Rsvd": 6039, "Surp": 0}


def test_pages_reserved_by_a_mapping_count_before_they_are_touched() -> None:
    # 130 pages touched, 6,039 reserved for the rest of the mapping: 6,169.
    assert committed(meminfo(POSTGRES_STARTED)) == 6169
    # After a prewarm touched them all: none free beyond the spare, none reserved.
    assert committed({"Total": 6400, "Free": 231, "Rsvd": 0}) == 6169
    # Held by the kernel but mapped by nobody (Postgres on 4 kB pages).
    assert committed({"Total": 6400, "Free": 6400, "Rsvd": 0}) == 0
    assert committed({}) == 0
