"""One of two instances SIGKILLed under load through the gateway: at most a
handful of requests fail (those in flight on it, a POST nginx may not retry),
none once the gateway has noticed; supervisord restarts the instance and the
gateway sends it traffic again (after max_fails/fail_timeout, 5 s)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from tests.reliability.conftest import FaultStack
from tests.reliability.harness import readiness, record_figures, routed_requests
from tests.reliability.load import Load, acknowledged_markers, between, failures, summary

WARM_S = 1.0
HANDFUL = 8  # requests in flight on the victim: about one in five of 20 clients is a POST
# Failures are the requests in flight on the victim: they start before the
# kill or, at most, as nginx learns of it from its first refused connect.
NOTICE_S = 0.5
RESTART_BOUND_S = 15.0
# nginx rests a failed instance fail_timeout (5 s), then tries it again.
REUSE_BOUND_S = 15.0


async def wait_for(predicate, timeout_s: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if await asyncio.to_thread(predicate):
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    return None


def safe_routed(port: int) -> float:
    try:
        return routed_requests(port)
    except OSError:
        return 0.0


@pytest.mark.parametrize("service", ["reviews", "qa", "overview"])
async def test_killed_instance_behind_the_gateway(fault_stack: FaultStack, service: str) -> None:
    mix = fault_stack.require(service)
    cluster = fault_stack.cluster
    victim_port = cluster.ports(service)[1]
    old_pid = cluster.pid(service, 1)
    assert old_pid > 0
    async with Load([fault_stack.gateway_url], mix.pick, workers=20) as load:
        await asyncio.sleep(WARM_S)
        assert safe_routed(victim_port) > 0, "the gateway was not using the victim before"
        t_kill = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)

        def restarted() -> bool:
            return cluster.pid(service, 1) not in (0, old_pid) and (
                readiness(victim_port).get("http_status") == 200
            )

        restart_s = await wait_for(restarted, RESTART_BOUND_S)
        # A fresh process: any routed request it counts came through the gateway.
        reuse_s = await wait_for(lambda: safe_routed(victim_port) > 0, REUSE_BOUND_S)
        await asyncio.sleep(0.5)
    outcomes = load.outcomes
    failed = failures(outcomes)
    missing = await mix.missing(fault_stack.dsn(service), acknowledged_markers(outcomes))
    record_figures(
        f"instance_kill[{service}]",
        {
            "before": summary(between(outcomes, 0, t_kill)),
            "after_kill": summary(between(outcomes, t_kill, float("inf"))),
            "failed": [o.describe() for o in failed],
            "restart_s": restart_s,
            "gateway_reuse_s_after_restart": reuse_s,
            "missing": len(missing),
        },
    )
    assert len(failed) <= HANDFUL, [o.describe() for o in failed]
    late = [o.describe() for o in failed if o.start > t_kill + NOTICE_S]
    assert late == [], "failures after the gateway had noticed the dead instance"
    for o in failed:  # the gateway's own JSON error, never a hang
        assert o.status == 502 and o.content_type == "application/json", o.describe()
    assert restart_s is not None, "supervisord did not restart the killed instance"
    assert reuse_s is not None, "the gateway did not send traffic to the restarted instance"
    assert missing == set(), "acknowledged writes not in the database"
