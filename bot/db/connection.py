"""One aiosqlite connection per process, WAL, explicit transactions, numbered migrations.

Query functions (bot/db/jobs.py, money.py, ...) are plain synchronous functions of a ``Conn``; they run in
the connection's own thread through ``Database.run`` (each statement commits alone) or
``Database.run_tx`` (``BEGIN IMMEDIATE`` ... ``COMMIT`` around the whole function). A whole
transaction is then ONE hop to that thread instead of one per statement: the reservation path
does a dozen statements, and per-statement hops cost more than the SQL itself.

The connection is in autocommit mode (``isolation_level=None``): a transaction exists only where
run_tx / transaction() opens one, ``BEGIN IMMEDIATE`` by default so the write lock is held before a
quota check reads its counts (no check-then-write race, also across processes).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

from bot.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
Params = Sequence[Any] | dict[str, Any]
P = ParamSpec("P")
T = TypeVar("T")


class MigrationError(RuntimeError):
    """A migration failed; the database was left at the previous version."""


class Conn:
    """What a query function gets: statement helpers over the raw connection. Used only inside
    the database thread (by functions passed to run / run_tx)."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return self.raw.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = self.fetchall(sql, params)  # fetch everything: a RETURNING statement must finish
        return rows[0] if rows else None

    def fetchval(self, sql: str, params: Params = (), default: Any = None) -> Any:
        row = self.fetchone(sql, params)
        return default if row is None or row[0] is None else row[0]

    def execute(self, sql: str, params: Params = ()) -> None:
        self.fetchall(sql, params)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self.raw.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction


def query(fn: Callable[Concatenate[Conn, P], T]) -> Callable[..., Any]:
    """Marks a query function. Given a Conn (inside the database thread) it runs at once; given the
    Database or an open Transaction it returns an awaitable that runs it in the database thread, so
    ``await q.get_job(db, 7)`` is ``await db.run(q.get_job, 7)``."""

    @functools.wraps(fn)
    def call(c: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(c, Conn):
            return fn(c, *args, **kwargs)
        return c.run(fn, *args, **kwargs)

    return call


def _in_transaction(conn: Conn, begin: str, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
    conn.raw.execute(begin)
    try:
        result = fn(conn, *args, **kwargs)
        conn.raw.execute("COMMIT")
        return result
    except BaseException:
        if conn.raw.in_transaction:
            conn.raw.execute("ROLLBACK")
        raise


class Transaction:
    """An open transaction spanning several awaits (``Database.transaction()``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def run(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._db._call(fn, *args, **kwargs)


class Database:
    """The bot's SQLite database. ``await db.run(q.get_job, 7)``; ``await db.run_tx(fn, ...)``."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._sync = Conn(conn._conn)  # the sqlite3 connection, touched only from its own thread
        self.path = path
        # Serialises use of the one connection across tasks: a statement of one task must never land
        # inside another task's open transaction() (and be rolled back with it).
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # aiosqlite has no public "run this callable in the connection thread"; _execute is what
        # each of its own methods uses (checked by tests/test_db.py on every aiosqlite version).
        try:
            return await self._conn._execute(fn, self._sync, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            _raise_unavailable(exc)
            raise

    def _owned(self) -> bool:
        return self._owner is not None and self._owner is asyncio.current_task()

    async def run(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(conn, *args)`` in the database thread; each statement commits on its own (or joins
        the transaction() this task has open)."""
        if self._owned():
            return await self._call(fn, *args, **kwargs)
        async with self._lock:
            return await self._call(fn, *args, **kwargs)

    async def run_tx(
        self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``BEGIN IMMEDIATE; fn(conn, *args); COMMIT`` in one hop; ROLLBACK and re-raise if fn raises."""
        return await self._run_tx("BEGIN IMMEDIATE", fn, args, kwargs)

    async def run_read(
        self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like run_tx with a deferred BEGIN: one consistent snapshot for several reads."""
        return await self._run_tx("BEGIN", fn, args, kwargs)

    async def _run_tx(self, begin: str, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        if self._owned():
            raise RuntimeError("run_tx inside transaction() of the same task: call tx.run instead")
        async with self._lock:
            try:
                return await self._conn._execute(_in_transaction, self._sync, begin, fn, args, kwargs)
            except sqlite3.OperationalError as exc:
                _raise_unavailable(exc)
                raise

    @asynccontextmanager
    async def transaction(self, immediate: bool = True) -> AsyncIterator[Transaction]:
        """A transaction across awaits: ``async with db.transaction() as tx: await tx.run(...)``.
        Prefer run_tx (one hop); this is for work that must await something between statements."""
        if self._owned():
            raise RuntimeError("nested Database.transaction() in the same task")
        async with self._lock:
            self._owner = asyncio.current_task()
            try:
                await self._call(_execute, "BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield Transaction(self)
                    await self._call(_execute, "COMMIT")
                except BaseException:
                    await asyncio.shield(self._call(_rollback))
                    raise
            finally:
                self._owner = None

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


def _execute(conn: Conn, sql: str) -> None:
    conn.raw.execute(sql)


def _fetchval(conn: Conn, sql: str) -> Any:
    return conn.fetchval(sql)


def _rollback(conn: Conn) -> None:
    if conn.raw.in_transaction:
        conn.raw.execute("ROLLBACK")


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


def _migrate(conn: Conn, migrations: list[Migration]) -> None:
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


def _configure(conn: Conn) -> None:
    raw = conn.raw
    raw.row_factory = sqlite3.Row
    raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    raw.execute("PRAGMA journal_mode = WAL")
    # NORMAL is durable against a killed process in WAL mode (only an OS crash can lose the tail).
    raw.execute("PRAGMA synchronous = NORMAL")
    raw.execute("PRAGMA foreign_keys = ON")


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
    db = Database(conn, path)
    try:
        await db._call(_configure)
        await db._call(_migrate, load_migrations(migrations_dir))
    except BaseException:
        await conn.close()
        raise
    return db
