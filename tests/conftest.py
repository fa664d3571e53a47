"""Shared fixtures: `world` is a started fake Discord + simulator + the real bot on a temp database
(tests/fakes/world.py); `store` is a fresh empty database on each store (SQLite file, PostgreSQL
database on the server the session starts, see tests/fakes/postgres.py).

Every fake Discord checks every body against Discord's schema (tests/fakes/discord_schema.py): a test
whose requests Discord would refuse fails, unless it is marked ``discord_invalid_bodies`` (it sends them
on purpose); the session fails on any violation outside a test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.discord_schema import LEDGER
from tests.fakes.postgres import PostgresServer, unavailable_reason
from tests.fakes.world import world  # noqa: F401  (a fixture, found by name)

pytest_plugins = ("pytester",)


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


# ---- Discord's schema, checked by every fake Discord ---------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "discord_invalid_bodies: the test sends bodies Discord refuses, on purpose")


@pytest.fixture(autouse=True)
def _discord_schema_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    LEDGER.current_test = request.node.nodeid
    LEDGER.test_expects_invalid = request.node.get_closest_marker("discord_invalid_bodies") is not None
    before = len(LEDGER.unexpected)
    yield
    found = [str(v) for _, v in LEDGER.unexpected[before:]]
    LEDGER.current_test, LEDGER.test_expects_invalid = "<outside any test>", False
    assert not found, "the fake Discord refused bodies against Discord's schema:\n" + "\n".join(found)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if LEDGER.checked:
        terminalreporter.write_line(
            f"fake Discord: {LEDGER.checked} bodies checked against Discord's schema, "
            f"{len(LEDGER.unexpected)} violations ({len(LEDGER.expected)} sent on purpose)")
    for where, violation in LEDGER.unexpected:
        terminalreporter.write_line(f"  {where}: {violation}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A violation in a module-scoped fixture falls between tests: it still fails the run.
    if LEDGER.unexpected and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
