"""CPU and memory of the processes under test, read from /proc (no psutil).

Process groups are resolved on every sample, so processes that start during a
workload (Postgres backends, restarted services) are counted; a process seen
for the first time mid-workload is charged its whole CPU time, which is all
spent inside the window when it started inside it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# group name -> {label: pid}; a label names one process ("reviews-0", "nginx:1234").
Resolver = Callable[[], dict[str, dict[str, int]]]


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of the process, in clock ticks."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces
    return int(fields[11]) + int(fields[12])


def rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def _stat_fields(pid: int) -> tuple[str, int] | None:
    """(comm, ppid) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    return comm, int(raw[raw.rindex(")") + 2 :].split()[1])


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def by_comm(name: str) -> dict[str, int]:
    out = {}
    for pid in all_pids():
        info = _stat_fields(pid)
        if info is not None and info[0] == name:
            out[f"{name}:{pid}"] = pid
    return out


def with_children(label: str, pid: int) -> dict[str, int]:
    """The process and its direct children (nginx master and workers)."""
    out = {label: pid}
    for child in all_pids():
        info = _stat_fields(child)
        if info is not None and info[1] == pid:
            out[f"{label}:{child}"] = child
    return out


@dataclass(slots=True)
class Usage:
    """CPU seconds per group and peak RSS per process over one window."""

    seconds: float
    cpu_s: dict[str, float]
    peak_rss: dict[str, int]
    samples: list[dict[str, int]] = field(default_factory=list)  # RSS per label, per tick

    def cpu_pct(self) -> dict[str, float]:
        """Percent of one core, averaged over the window."""
        return {g: round(100 * s / max(self.seconds, 1e-9), 1) for g, s in self.cpu_s.items()}


class Sampler:
    """Samples the groups every `interval` seconds in a thread until stop()."""

    def __init__(self, resolve: Resolver, interval: float = 0.5, keep_samples: bool = False):
        self._resolve = resolve
        self._interval = interval
        self._keep = keep_samples
        self._first: dict[tuple[str, int], int] = {}
        self._last: dict[tuple[str, int], int] = {}
        self._peak: dict[str, int] = {}
        self._samples: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0
        self._initial = True

    def start(self) -> Sampler:
        self._started = time.monotonic()
        self._sample()
        self._initial = False
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        rss_now: dict[str, int] = {}
        for group, procs in self._resolve().items():
            for label, pid in procs.items():
                ticks = cpu_ticks(pid)
                if ticks is None:
                    continue
                key = (group, pid)
                # Seen at the start: baseline now. Born later: baseline zero.
                self._first.setdefault(key, ticks if self._initial else 0)
                self._last[key] = ticks
                rss = rss_bytes(pid)
                if rss is not None:
                    rss_now[label] = rss
                    self._peak[label] = max(self._peak.get(label, 0), rss)
        if self._keep:
            self._samples.append(rss_now)

    def stop(self) -> Usage:
        self._stop.set()
        self._thread.join()
        self._sample()
        cpu: dict[str, float] = {}
        for (group, pid), last in self._last.items():
            cpu[group] = cpu.get(group, 0.0) + (last - self._first[(group, pid)]) / TICK
        return Usage(
            seconds=time.monotonic() - self._started,
            cpu_s={g: round(s, 2) for g, s in cpu.items()},
            peak_rss=dict(self._peak),
            samples=self._samples,
        )
