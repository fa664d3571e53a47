"""The SQLite store: one aiosqlite connection per process, WAL, explicit transactions.

The connection is in autocommit mode (``isolation_level=None``): a transaction exists only where
run_tx / transaction() opens one, ``BEGIN IMMEDIATE`` so the write lock is held before a quota check
reads its counts (no check-then-write race, also across processes: SQLite has one writer at a time).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.db.connection import Conn, Database, IntegrityError, Migration, MigrationError, Params, load_migrations
from bot.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
T = TypeVar("T")


class SqliteConn(Conn):
    store = "sqlite"

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def _fetch(self, sql: str, params: Params) -> list[sqlite3.Row]:
        return self.raw.execute(sql, params).fetchall()

    def _many(self, sql: str, rows: Iterable[Params]) -> None:
        self.raw.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    def begin(self, sql: str) -> None:
        self.raw.execute(sql)

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self.raw.in_transaction:
            self.raw.execute("ROLLBACK")


class SqliteDatabase(Database):
    """``await db.run(get_job, 7)``; ``await db.run_tx(fn, ...)`` (BEGIN IMMEDIATE ... COMMIT)."""

    store = "sqlite"
    BEGIN_WRITE = "BEGIN IMMEDIATE"
    BEGIN_READ = "BEGIN"

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        super().__init__()
        self._conn = conn
        self._sync = SqliteConn(conn._conn)  # the sqlite3 connection, touched only from its own thread
        self.path = path

    @property
    def name(self) -> str:
        return str(self.path)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # aiosqlite has no public "run this callable in the connection thread"; _execute is what
        # each of its own methods uses (checked by tests/db/test_db.py on every aiosqlite version).
        try:
            return await self._conn._execute(fn, self._sync, *args, **kwargs)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            _raise_unavailable(exc)
            raise

    async def user_version(self) -> int:
        return int(await self.run(_fetchval, "PRAGMA user_version"))

    async def backup(self, target: str | Path) -> None:
        """A consistent copy of the live database (SQLite's online backup), e.g. ``klingbot backup``."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        dest = sqlite3.connect(str(target))
        try:
            async with self._lock:
                await self._conn.backup(dest)
        finally:
            dest.close()

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()


def _raise_unavailable(exc: sqlite3.OperationalError) -> None:
    """A locked or full database, in words an operator (or a member) can act on; other errors are
    left alone. SQLite rolled the statement or transaction back, so nothing was half-written."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        raise DatabaseUnavailable("The bot's database is locked by another program and did not free up "
                                  "in time; nothing was changed. Please try again in a moment.") from exc
    if "full" in text:
        raise DatabaseUnavailable("The disk holding the bot's database is full; nothing was changed. "
                                  "The operator needs to free some space.") from exc


def _fetchval(conn: Conn, sql: str) -> Any:
    return conn.fetchval(sql)


def _migrate(conn: SqliteConn, migrations: list[Migration]) -> None:
    """Each script holds its own BEGIN ... COMMIT (executescript commits before it starts)."""
    raw = conn.raw

    def version() -> int:
        return int(raw.execute("PRAGMA user_version").fetchone()[0])

    for migration in migrations:
        if version() >= migration.version:
            continue
        try:
            raw.executescript(migration.sql)
        except sqlite3.Error as exc:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            # Another process may have applied it while this one waited for the lock.
            if version() >= migration.version:
                continue
            raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
        if raw.in_transaction:
            raw.execute("ROLLBACK")
            raise MigrationError(f"migration {migration.name} does not COMMIT its transaction")
        if version() != migration.version:
            raise MigrationError(f"migration {migration.name} did not set user_version")
        log.info("database migrated to version %d (%s)", migration.version, migration.name)


def _configure(conn: SqliteConn) -> None:
    raw = conn.raw
    raw.row_factory = sqlite3.Row
    raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    raw.execute("PRAGMA journal_mode = WAL")
    # NORMAL is durable against a killed process in WAL mode (only an OS crash can lose the tail).
    raw.execute("PRAGMA synchronous = NORMAL")
    raw.execute("PRAGMA foreign_keys = ON")


async def open_sqlite(path: str | Path, *, migrations_dir: Path | None = None) -> SqliteDatabase:
    """Open (creating it and its directory if needed) and migrate the database at ``path``."""
    path = Path(path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    pending = aiosqlite.connect(str(path), isolation_level=None)
    # A daemon worker thread: a process that exits without close() (an uncaught error in a CLI
    # command) must not hang on it. Nothing is lost: an unfinished transaction is rolled back.
    worker = getattr(pending, "_thread", None)
    if worker is not None and not worker.is_alive():
        worker.daemon = True
    conn = await pending
    db = SqliteDatabase(conn, path)
    try:
        await db._call(_configure)
        await db._call(_migrate, load_migrations(migrations_dir))
    except BaseException:
        await conn.close()
        raise
    return db
