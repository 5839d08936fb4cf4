"""How the local stack's optional pieces read their switches and ports from
the environment (`make up PG_REPLICAS=1 PG_POOLER=1 REDIS_CLUSTER=1`): one
reading of a flag and of an integer for all of them."""

from __future__ import annotations

from collections.abc import Mapping

OFF = ("", "0", "false", "no", "off")


def flag(env: Mapping[str, str], name: str) -> bool:
    """Set unless empty, 0, false, no or off."""
    return env.get(name, "").strip().lower() not in OFF


def int_setting(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"setting {name} must be an integer, got {raw!r}") from None
