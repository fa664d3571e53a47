"""Shared fixtures: `world` is a started fake Discord + simulator + the real bot on a temp database
(tests/fakes/world.py); `store` is a fresh empty database on each store (SQLite file, PostgreSQL
database on the server the session starts, see tests/fakes/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.postgres import PostgresServer, unavailable_reason
from tests.fakes.world import world  # noqa: F401  (a fixture, found by name)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (starting one takes seconds)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A new, empty database on the session's server."""
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where to open a fresh empty database: a SQLite file, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite3")
    return request.getfixturevalue("pg_url")
