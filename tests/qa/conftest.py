from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from services.common.resources import CACHE
from services.qa.app import create_app
from tests.conftest import make_database, truncate_all


@pytest.fixture(scope="session")
def qa_db() -> Iterator[str]:
    yield from make_database("qa")


@pytest.fixture
async def qa_client(aiohttp_client, qa_db, redis_server, make_settings):
    """A qa app on an empty test database and an empty cache, its local tier live."""
    await truncate_all(qa_db)
    redis_server.flush()
    app = create_app(make_settings("qa", qa_db))
    client = await aiohttp_client(app)
    assert await app[CACHE].wait_ready()
    return client


@pytest.fixture
async def qa_conn(qa_db):
    conn = await asyncpg.connect(qa_db)
    yield conn
    await conn.close()
