"""The qa tests' app client and database connection (tests/conftest.py
makes both, and the `qa_db` database they use)."""

from __future__ import annotations

import pytest


@pytest.fixture
async def qa_client(service_client, qa_db):
    """A qa app on an empty test database and an empty cache, its local tier live."""
    return await service_client("qa", qa_db, wait_cache=True)


@pytest.fixture
async def qa_conn(connect, qa_db):
    return await connect(qa_db)
