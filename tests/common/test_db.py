"""The URL helpers of services/common/db.py: a socket directory given as
?host= must survive a change of database (a URL cut at its last slash would
lose the directory and name a database "postgresql")."""

from __future__ import annotations

from services.common.db import database_name, with_database


def test_another_database_keeps_the_socket_directory() -> None:
    url = "postgresql://postgres@/atelier_qa?host=/run/postgresql"
    assert with_database(url, "postgres") == "postgresql://postgres@/postgres?host=/run/postgresql"
    assert database_name(url) == "atelier_qa"


def test_another_database_over_tcp() -> None:
    url = "postgresql://app:secret@db.internal:5433/atelier_qa"
    assert with_database(url, "postgres") == "postgresql://app:secret@db.internal:5433/postgres"
    assert database_name(url) == "atelier_qa"
