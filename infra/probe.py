"""One HTTP status probe for the stack's readiness waits (infra/stack.py,
infra/gateway_and_prometheus.py) and the benchmark's (bench/env.py)."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_status(url: str, timeout_s: float = 1) -> int:
    """The status `url` answers a GET with; 0 when nothing answers in time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
