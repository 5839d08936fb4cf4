"""Running wrk with bench/lua/workload.lua (or paced.lua) and reading the JSON
summary its done() prints; wrk's own CPU comes from wait4's rusage."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import LUA_DIR, ROOT

WRK = os.environ.get("WRK", "/usr/bin/wrk")
MARK = "BENCH_JSON "


@dataclass(slots=True)
class WrkRun:
    url: str
    ops: dict[str, int]
    pools: dict[str, Path]  # Lua argument name (products, questions, ...) -> id file
    duration_s: int
    threads: int
    connections: int
    rate: int = 0  # total requests per second; 0 = as fast as it goes
    marker: str = "bench"
    timeout_s: int = 5
    # Read ids in file order, each thread its own stretch, from this far into
    # it (workload.lua); None: ids drawn at random.
    walk_from: int | None = None

    def command(self) -> list[str]:
        script = LUA_DIR / ("paced.lua" if self.rate else "workload.lua")
        ops = ",".join(f"{op}:{w}" for op, w in self.ops.items())
        args = [f"ops={ops}", f"marker={self.marker}", f"threads={self.threads}"]
        args += [f"rate={self.rate}"] + [f"{k}={v}" for k, v in self.pools.items()]
        if self.walk_from is not None:
            args.append(f"walk={self.walk_from}")
        return [
            WRK,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{self.duration_s}s",
            f"--timeout={self.timeout_s}s",
            "-s",
            str(script),
            self.url,
            "--",
            *args,
        ]


@dataclass(slots=True)
class WrkResult:
    summary: dict[str, Any]
    cpu_s: float
    stdout: str


class WrkError(RuntimeError):
    pass


def start(run: WrkRun) -> subprocess.Popen[str]:
    return subprocess.Popen(
        run.command(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen[str]) -> WrkResult:
    """Read wrk's output to the end, reap it with wait4 for its CPU time."""
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    line = next((x for x in out.splitlines() if x.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise WrkError(f"wrk exited {proc.returncode} without a summary:\n{out[-2000:]}")
    summary = json.loads(line[len(MARK) :])
    return WrkResult(summary, round(usage.ru_utime + usage.ru_stime, 2), out)


def run(spec: WrkRun) -> WrkResult:
    return finish(start(spec))
