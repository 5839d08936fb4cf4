"""bench/ceiling.py --body-bytes: the ceiling answers bodies of the size asked
(else `ceiling-query-<N>B` in bench.cold_ab measures some other size)."""

from __future__ import annotations

import orjson
import pytest

from bench.ceiling import BODY, body_of, create_app


@pytest.mark.parametrize("size", [len(BODY) + 10, 244, 1_400, 6_000])
def test_a_padded_body_is_json_of_exactly_the_size(size: int) -> None:
    body = body_of(size)
    assert len(body) == size
    assert orjson.loads(body)["results"] == []


@pytest.mark.parametrize("size", [None, 0, len(BODY)])
def test_no_size_or_a_smaller_one_keeps_the_plain_body(size: int | None) -> None:
    assert body_of(size) == BODY


async def test_the_fixed_ceiling_answers_the_padded_body(aiohttp_client) -> None:
    client = await aiohttp_client(create_app(None, body_bytes=1_400))
    response = await client.get("/x?id=3")
    assert response.status == 200
    assert len(await response.read()) == 1_400
