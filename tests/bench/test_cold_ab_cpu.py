"""bench/cold_ab.py --cpu: one run's CPU per request of the process under test
(by pid), of Postgres and of wrk (a reaped child), from wrk's own count of
requests. A stand-in `wrk` on PATH burns CPU and prints wrk's summary lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.cold_ab import wrk

FAKE_WRK = f"""#!{sys.executable}
import time
started = time.process_time()
while time.process_time() - started < 0.3:
    pass
print("  2000 requests in 1.00s, 1.00MB read")
print("Requests/sec:   2000.00")
print("     50%    1.00ms")
print("     99%    2.50ms")
"""
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"


def test_cpu_per_request_of_the_process_postgres_and_wrk(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "wrk"
    fake.write_text(FAKE_WRK)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    app = subprocess.Popen([sys.executable, "-c", BURN])  # the process under test
    try:
        result = wrk("http://127.0.0.1:1", 1, 1, [], cpu_of=app.pid)
    finally:
        app.wait()
    assert result["rps"] == 2000.0 and result["p99_ms"] == 2.5
    us = result["cpu_us"]
    assert set(us) == {"app", "postgres", "wrk"}
    # Over 2000 requests: the app's 0.4 s is 200 µs each (less whatever of it
    # ran before the window opened), wrk's 0.3 s 150 µs (plus its start-up);
    # clock ticks are 10 ms.
    assert 50 <= us["app"] <= 220, us
    assert 140 <= us["wrk"] <= 260, us
    assert us["postgres"] >= 0
    assert "cpu_us" not in wrk("http://127.0.0.1:1", 1, 1, [])
