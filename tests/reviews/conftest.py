from __future__ import annotations

import asyncpg
import pytest

from services.reviews.app import create_app
from tests.conftest import truncate_all


@pytest.fixture
async def reviews_client(aiohttp_client, reviews_db, redis_server, make_settings):
    """A reviews app on an empty test database and an empty cache."""
    await truncate_all(reviews_db)
    redis_server.flush()
    app = create_app(make_settings("reviews", reviews_db))
    client = await aiohttp_client(app)
    return client


@pytest.fixture
async def reviews_conn(reviews_db):
    conn = await asyncpg.connect(reviews_db)
    yield conn
    await conn.close()
