"""The overview tests' app client and database connection (tests/conftest.py
makes both, and the `overview_db` database they use)."""

from __future__ import annotations

import pytest


@pytest.fixture
async def overview_client(service_client, overview_db):
    """An overview app on an empty test database and an empty cache."""
    return await service_client("overview", overview_db)


@pytest.fixture
async def overview_conn(connect, overview_db):
    return await connect(overview_db)
