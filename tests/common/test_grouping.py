"""cache/grouping.py's InvalidationGroups on its own, with a `send` the test
holds open: which call carries which write, and who hears what. (Against a
real Redis and cluster: tests/common/test_cache_coherence.py,
test_concurrent_invalidations_go_out_in_groups.)"""

from __future__ import annotations

import asyncio

import pytest

from services.common.cache.grouping import InvalidationGroups


class HeldSend:
    """A send whose calls the test releases one at a time."""

    def __init__(self, outcome: bool = True) -> None:
        self.calls: list[tuple[list[str], int | None]] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.outcome: bool | Exception = outcome

    async def __call__(self, scopes: list[str], lsn: int | None) -> bool:
        self.calls.append((scopes, lsn))
        self.started.set()
        await self.release.wait()
        self.release.clear()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


async def test_writes_of_one_loop_turn_share_a_call_and_later_ones_wait_for_the_next():
    send = HeldSend()
    groups = InvalidationGroups(send)
    first = [asyncio.ensure_future(groups.submit([f"p:{i}"], None)) for i in range(3)]
    await send.started.wait()
    assert send.calls == [(["p:0", "p:1", "p:2"], None)]
    # Submitted while that call is in flight: not in it, in the next one.
    later = [asyncio.ensure_future(groups.submit(["p:9", "p:0"], None)) for _ in range(2)]
    await asyncio.sleep(0)  # a loop turn: the later ones have submitted
    assert len(send.calls) == 1 and not any(f.done() for f in later)
    send.release.set()
    assert await asyncio.gather(*first) == [True] * 3
    await asyncio.wait_for(_calls(send, 2), 1)
    assert send.calls[1] == (["p:9", "p:0"], None)
    assert not any(f.done() for f in later)  # their call has not returned
    send.release.set()
    assert await asyncio.gather(*later) == [True, True]
    assert (groups.calls, groups.writes) == (2, 5)


async def _calls(send: HeldSend, n: int) -> None:
    while len(send.calls) < n:
        send.started.clear()
        await send.started.wait()


async def test_a_group_carries_the_largest_lsn_of_its_writes():
    send = HeldSend()
    send.release.set()
    groups = InvalidationGroups(send)
    await asyncio.gather(*(groups.submit(["q:1"], lsn) for lsn in (0x30, 0x50, 0x10)))
    assert send.calls == [(["q:1"], 0x50)]


async def test_every_writer_of_a_failed_call_hears_it():
    send = HeldSend(outcome=False)
    send.release.set()
    groups = InvalidationGroups(send)
    assert await asyncio.gather(*(groups.submit([f"p:{i}"], None) for i in range(4))) == [False] * 4


async def test_an_exception_reaches_every_writer_of_its_call_and_the_next_call_still_goes():
    send = HeldSend(outcome=RuntimeError("bug"))
    groups = InvalidationGroups(send)
    doomed = [asyncio.ensure_future(groups.submit(["p:1"], None)) for _ in range(2)]
    await send.started.wait()
    send.release.set()
    for future in doomed:
        with pytest.raises(RuntimeError):
            await future
    send.outcome = True
    send.release.set()
    assert await groups.submit(["p:2"], None) is True


async def test_a_cancelled_writer_does_not_cancel_the_call_the_others_wait_on():
    send = HeldSend()
    groups = InvalidationGroups(send)
    quitter = asyncio.ensure_future(groups.submit(["p:1"], None))
    stayer = asyncio.ensure_future(groups.submit(["p:2"], None))
    await send.started.wait()
    quitter.cancel()
    send.release.set()
    assert await stayer is True
    assert quitter.cancelled()
