"""The invalidation channel's listener: one subscription per process, on one
Redis or, on a cluster, a sharded subscription (SSUBSCRIBE) on the node that
owns the channel's slot (the channel is hash-tagged with the namespace's
generation and beacon, scripts.py).

Invariants: messages are handled one at a time in the order Redis sent them
(the lease rests on it, lease.py); whenever the subscription is (re)made, the
local tier is dropped whole first (messages sent meanwhile are lost) and the
lease lapses while there is none; a subscription that hears nothing, not even
a beacon, for SILENT_S is taken for lost (a node partitioned away or
replaced by a failover) and made again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from .resilience import close_bounded

log = logging.getLogger("runway.cache")

SILENT_S = 1.0  # beacons come every ~50 ms: this long without one means a lost subscription


class Bus:
    """Subscribes to `channel` and hands every message to `handle`."""

    def __init__(
        self,
        redis,
        channel: str,
        *,
        cluster: bool,
        pubsub_factory: Callable[[], Redis] | None,
        handle: Callable[[dict], Awaitable[None]],
        on_subscribed: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._cluster = cluster
        self._pubsub_factory = pubsub_factory
        self.handle = handle
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self.subscribed = False

    async def _client(self) -> Redis:
        if not self._cluster:
            return self._pubsub_factory() if self._pubsub_factory else self._redis
        # The channel's slot lives on one primary: subscribe there, after
        # asking the cluster who that is now (a failover may have moved it).
        await self._redis.nodes_manager.initialize()
        node = self._redis.get_node_from_key(self._channel)
        return Redis(host=node.host, port=node.port, socket_timeout=None)

    async def run(self) -> None:
        backoff = 0.05
        while True:
            client = None
            pubsub = None
            try:
                client = await self._client()
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                if self._cluster:
                    await pubsub.ssubscribe(self._channel)
                else:
                    await pubsub.subscribe(self._channel)
                # Messages sent while we were not subscribed are lost: start clean.
                self._on_subscribed()
                self.subscribed = True
                backoff = 0.05
                last = time.monotonic()
                while True:
                    message = await pubsub.get_message(timeout=SILENT_S / 4)
                    if message is not None:
                        last = time.monotonic()
                        await self.handle(message)
                    elif time.monotonic() - last > SILENT_S:
                        raise ConnectionError(f"nothing heard for {SILENT_S} s")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed:
                    log.warning("cache subscription lost: %r", exc)
            finally:
                self.subscribed = False
                self._on_lost()
                if pubsub is not None:
                    await close_bounded(pubsub.aclose(), pubsub.connection)
                if client is not None and client is not self._redis:
                    await close_bounded(client.aclose(), None)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
