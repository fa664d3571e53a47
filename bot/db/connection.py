"""One aiosqlite connection per process, WAL, explicit transactions, numbered migrations.

The connection runs in autocommit mode (``isolation_level=None``): a transaction exists only where
``Database.transaction()`` opens one, with ``BEGIN IMMEDIATE`` by default so the write lock is taken
before the counts a quota check reads (no check-then-write race, also across processes).

Many coroutines share the connection, so an asyncio lock serialises its use: otherwise a statement of
one task would land inside another task's open transaction (and be rolled back with it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
Params = Sequence[Any] | dict[str, Any]


class MigrationError(RuntimeError):
    """A migration failed; the database was left at the previous version."""


class Executor(Protocol):
    """What a query function needs: the Database itself (autocommit) or an open transaction."""

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]: ...

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None: ...

    async def fetchval(self, sql: str, params: Params = (), default: Any = None) -> Any: ...

    async def execute(self, sql: str, params: Params = ()) -> None: ...

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...


class _Runner:
    """Statement helpers over a raw connection. Every call is one hop to the connection's thread
    (``execute_fetchall``); writes that need ids or counts use ``RETURNING``."""

    _conn: aiosqlite.Connection

    async def _fetchall(self, sql: str, params: Params) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def _executemany(self, sql: str, rows: Iterable[Params]) -> None:
        cursor = await self._conn.executemany(sql, rows)
        await cursor.close()


class Tx(_Runner):
    """An open transaction. Only the task that opened it uses it."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self._fetchall(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = (), default: Any = None) -> Any:
        row = await self.fetchone(sql, params)
        return default if row is None or row[0] is None else row[0]

    async def execute(self, sql: str, params: Params = ()) -> None:
        await self._fetchall(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._executemany(sql, rows)


class Database(_Runner):
    """The bot's SQLite database. Outside a transaction each statement commits on its own."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._tx: Tx | None = None

    # Statements outside a transaction wait for any open one to finish. The task holding the
    # transaction may use the Database too: its statements then run inside that transaction.
    async def _locked(self, fn: Any, *args: Any) -> Any:
        if self._owner is not None and self._owner is asyncio.current_task():
            return await fn(*args)
        async with self._lock:
            return await fn(*args)

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self._locked(self._fetchall, sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = (), default: Any = None) -> Any:
        row = await self.fetchone(sql, params)
        return default if row is None or row[0] is None else row[0]

    async def execute(self, sql: str, params: Params = ()) -> None:
        await self.fetchall(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._locked(self._executemany, sql, rows)

    @asynccontextmanager
    async def transaction(self, immediate: bool = True) -> AsyncIterator[Tx]:
        """``BEGIN IMMEDIATE`` (or deferred ``BEGIN`` for read-only work) ... ``COMMIT``;
        ``ROLLBACK`` when the body raises (cancellation included)."""
        task = asyncio.current_task()
        if self._owner is not None and self._owner is task:
            raise RuntimeError("nested Database.transaction() in the same task")
        async with self._lock:
            self._owner = task
            try:
                if self._conn.in_transaction:  # a rollback that was itself interrupted
                    log.warning("rolling back a transaction left open")
                    await self._conn.execute_fetchall("ROLLBACK")
                await self._conn.execute_fetchall("BEGIN IMMEDIATE" if immediate else "BEGIN")
                tx = Tx(self._conn)
                try:
                    yield tx
                    await self._conn.execute_fetchall("COMMIT")
                except BaseException:
                    await asyncio.shield(self._rollback())
                    raise
            finally:
                self._owner = None

    async def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                await self._conn.execute_fetchall("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")

    async def user_version(self) -> int:
        return int(await self.fetchval("PRAGMA user_version", default=0))

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


# ---- migrations ------------------------------------------------------------------------------

_NAME = re.compile(r"^(\d+)-[\w.-]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Traversable | Path | None = None) -> list[Migration]:
    """Numbered ``NNN-name.sql`` files, in order; the package's own when no directory is given."""
    root: Traversable | Path = directory or resources.files("bot.db").joinpath("migrations")
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migrations must be numbered 1, 2, 3...: {migration.name} is out of place")
        if not re.search(rf"PRAGMA\s+user_version\s*=\s*{expected}\s*;", migration.sql, re.I):
            raise MigrationError(f"{migration.name} must set PRAGMA user_version = {expected} itself")
    return found


async def _apply(conn: aiosqlite.Connection, migrations: list[Migration]) -> None:
    async def version() -> int:
        return int((await conn.execute_fetchall("PRAGMA user_version"))[0][0])

    for migration in migrations:
        if await version() >= migration.version:
            continue
        try:
            await conn.executescript(migration.sql)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                await conn.execute_fetchall("ROLLBACK")
            # Another process may have applied the same migration while we waited for the lock.
            if await version() >= migration.version:
                continue
            raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
        if conn.in_transaction:
            await conn.execute_fetchall("ROLLBACK")
            raise MigrationError(f"migration {migration.name} does not COMMIT its transaction")
        if await version() != migration.version:
            raise MigrationError(f"migration {migration.name} did not set user_version")
        log.info("database migrated to version %d (%s)", migration.version, migration.name)


async def open_database(path: str | Path, *, migrations_dir: Path | None = None) -> Database:
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
    try:
        conn.row_factory = sqlite3.Row
        await conn.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute_fetchall("PRAGMA journal_mode = WAL")
        # NORMAL is durable against a killed process in WAL mode (only an OS crash can lose the tail).
        await conn.execute_fetchall("PRAGMA synchronous = NORMAL")
        await conn.execute_fetchall("PRAGMA foreign_keys = ON")
        await _apply(conn, load_migrations(migrations_dir))
    except BaseException:
        await conn.close()
        raise
    return Database(conn, path)
