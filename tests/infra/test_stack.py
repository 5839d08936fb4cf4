"""infra/stack.py's choice of each service's database URL: the environment's
when it gives one, else the local Postgres through its Unix socket when that
lets user postgres in without a password, else over TCP loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from infra import stack


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    stack._local_socket_dir.cache_clear()
    yield
    stack._local_socket_dir.cache_clear()


async def _over_socket(url: str) -> bool:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval("SELECT inet_server_addr() IS NULL")  # NULL: a Unix socket
    finally:
        await conn.close()


def test_the_local_url_reaches_postgres_through_the_socket_it_found(fresh_probe: None) -> None:
    url = stack.local_postgres_url("postgres")
    assert asyncio.run(_over_socket(url)) is (stack._local_socket_dir() is not None)


def test_a_directory_without_a_socket_is_not_taken(tmp_path: Path) -> None:
    assert not stack._socket_answers(str(tmp_path))


def test_without_a_socket_the_url_is_tcp_loopback(fresh_probe: None, monkeypatch) -> None:
    monkeypatch.setattr(stack, "PG_SOCKET_DIRS", ("/nonexistent",))
    url = stack.local_postgres_url("atelier_qa")
    assert url == "postgresql://postgres@127.0.0.1:5432/atelier_qa"
    assert asyncio.run(_over_socket(stack.local_postgres_url("postgres"))) is False


def test_the_environment_url_wins_over_the_local_one(monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("QA_DATABASE_URL", "postgresql://app@db.internal:5432/qa")
    assert stack.service_database_url("qa") == "postgresql://app@db.internal:5432/qa"
    monkeypatch.delenv("QA_DATABASE_URL")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.internal:5432/shared")
    assert stack.service_database_url("qa") == "postgresql://app@db.internal:5432/shared"
    monkeypatch.delenv("DATABASE_URL")
    assert stack.service_database_url("qa") == stack.local_postgres_url("atelier_qa")


def test_each_program_is_given_its_database_url(monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("REVIEWS_DATABASE_URL", "postgresql://app@db.internal:5432/reviews")
    (program,) = stack.service_programs(["reviews"])
    assert 'REVIEWS_DATABASE_URL="postgresql://app@db.internal:5432/reviews"' in program
