from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from services.overview.app import create_app
from tests.conftest import make_database, truncate_all


@pytest.fixture(scope="session")
def overview_db() -> Iterator[str]:
    yield from make_database("overview")


@pytest.fixture
async def overview_client(aiohttp_client, overview_db, redis_server, make_settings):
    """An overview app on an empty test database and an empty cache."""
    await truncate_all(overview_db)
    redis_server.flush()
    app = create_app(make_settings("overview", overview_db))
    return await aiohttp_client(app)


@pytest.fixture
async def overview_conn(overview_db):
    conn = await asyncpg.connect(overview_db)
    yield conn
    await conn.close()
