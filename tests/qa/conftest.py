"""The qa tests' app client and database connection (tests/conftest.py
makes both, and the `qa_db` database they use)."""

from __future__ import annotations

import pytest

from services.qa import read_model_relay


@pytest.fixture
async def qa_client(service_client, qa_db, monkeypatch):
    """A qa app on an empty test database and an empty cache, its local tier
    live. Its read-model relay runs when the app's own answer writes wake it,
    not on a timer: a test that writes straight into the tables decides when
    their questions are rebuilt (helpers.rebuild_pending)."""
    monkeypatch.setattr(read_model_relay, "POLL_S", 3600.0)
    return await service_client("qa", qa_db, wait_cache=True)


@pytest.fixture
async def qa_conn(connect, qa_db):
    return await connect(qa_db)
