"""`python -m bench.stackup`: infra.stack's `up` for the benchmark, run with the
benchmark's environment (bench/config.py), minus its per-service `prepare`.

The harness has already migrated and loaded the benchmark databases at the
chosen scale (bench/data.py); `prepare` would only re-check them, and would
load the demo dataset into any that looked empty. Its Redis, one server or
with --redis-cluster a cluster, is the harness's own too (bench/env.py): with
REDIS_CLUSTER=1 `up` would otherwise add supervisord programs for cluster
nodes on REDIS_CLUSTER_PORT, the ports the harness's nodes already hold. The
services still get REDIS_CLUSTER=1 and REDIS_URL=<seed> from `up`'s own code
(infra/redis_cluster_stack.py service_env). Everything else (the supervisord
programs, the gateway, the readiness waits) is `make up`'s own code.
"""

from __future__ import annotations

import sys

from infra import redis_cluster_stack, stack
from services.common.settings import SERVICES


def main() -> None:
    services = sys.argv[1].split(",") if len(sys.argv) > 1 else list(SERVICES)
    stack.prepare = lambda service: None  # data loaded by bench/data.py
    # The cluster's nodes are the harness's, started and found ok before this.
    redis_cluster_stack.programs = lambda *args, **kwargs: []
    redis_cluster_stack.stack_up = lambda *args, **kwargs: None
    stack.up(services)


if __name__ == "__main__":
    main()
