"""infra/stall_watch.py on a real stall: a child process holding a StallWatch
is stopped (SIGSTOP) for STOPPED_S and continued; the watch counts about that
long. A child left running counts nothing, even while another of its threads
is blocked in a call (the failover loop's socket reads)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.conftest import ROOT

STOPPED_S = 1.0
CHILD = """
import sys, threading
from infra.stall_watch import StallWatch
with StallWatch() as watch:
    blocked = threading.Thread(target=sys.stdin.readline)  # another thread, blocked
    blocked.start()
    print("ready", flush=True)
    blocked.join()
    print(watch.stalled_s, flush=True)
"""


def watched_child(stop_for_s: float | None) -> float:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        if stop_for_s is not None:
            child.send_signal(signal.SIGSTOP)
            time.sleep(stop_for_s)  # the subject: how long the process is held
            child.send_signal(signal.SIGCONT)
        else:
            time.sleep(STOPPED_S)  # the same span, running
        child.stdin.write("\n")
        child.stdin.flush()
        return float(child.stdout.readline())
    finally:
        child.kill()
        child.wait()


def test_a_stopped_process_counts_its_stall() -> None:
    stalled = watched_child(STOPPED_S)
    assert STOPPED_S * 0.8 < stalled < STOPPED_S + 2.0


def test_a_running_process_blocked_in_a_call_counts_nothing() -> None:
    stalled = watched_child(None)
    assert stalled == 0.0
