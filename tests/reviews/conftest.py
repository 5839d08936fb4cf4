"""The reviews tests' app client and database connection (tests/conftest.py
makes both, and the `reviews_db` database they use)."""

from __future__ import annotations

import pytest


@pytest.fixture
async def reviews_client(service_client, reviews_db):
    """A reviews app on an empty test database and an empty cache."""
    return await service_client("reviews", reviews_db)


@pytest.fixture
async def reviews_conn(connect, reviews_db):
    return await connect(reviews_db)
