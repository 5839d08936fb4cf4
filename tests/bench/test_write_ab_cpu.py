"""bench/write_ab.py --cpu: each group's CPU over the window, per request, in
microseconds; wrk's from the rusage of reaped children."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

from bench.procs import Sampler
from bench.write_ab import per_request

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def burn(seconds: float) -> None:
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass


def test_cpu_per_request_by_group_in_microseconds() -> None:
    sampler = Sampler(lambda: {"service": {"me": os.getpid()}}, interval=0.05).start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    burn(0.4)  # this process: the "service"
    subprocess.run([sys.executable, "-c", BURN.format(s=0.3)], check=True)  # a reaped child: "wrk"
    us = per_request(sampler, before, requests=1000)
    assert set(us) == {"service", "wrk"}
    # 0.4 s over 1000 requests is 400 µs each; clock ticks are 10 ms and the
    # interpreter's start-up adds to the child's.
    assert 360 <= us["service"] <= 520, us
    assert 290 <= us["wrk"] <= 450, us
