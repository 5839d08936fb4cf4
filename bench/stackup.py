"""`python -m bench.stackup`: infra.stack's `up` for the benchmark, run with the
benchmark's environment (bench/config.py), minus its per-service `prepare`.

The harness has already migrated and loaded the benchmark databases at the
chosen scale (bench/data.py); `prepare` would only re-check them, and would
load the demo dataset into any that looked empty. Everything else (the
supervisord programs, the gateway, the readiness waits) is `make up`'s own code.
"""

from __future__ import annotations

import sys

from infra import stack
from services.common.settings import SERVICES


def main() -> None:
    services = sys.argv[1].split(",") if len(sys.argv) > 1 else list(SERVICES)
    stack.prepare = lambda service: None  # data loaded by bench/data.py
    stack.up(services)


if __name__ == "__main__":
    main()
