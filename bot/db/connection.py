"""The store's face: a ``Database`` that runs synchronous query functions of a ``Conn`` in its own
thread, one transaction per call, on either store (SQLite in bot/db/sqlite.py, PostgreSQL in
bot/db/postgres.py). ``open_database`` picks the store from where it is pointed.

Query functions (bot/db/jobs.py, money.py, ...) run in the database's thread through
``Database.run`` (each statement commits alone) or ``Database.run_tx`` (one write transaction around
the whole function). A whole transaction is then ONE hop to that thread instead of one per
statement: the reservation path does a dozen statements, and per-statement hops cost more than the
SQL itself. The SQL is written once, in SQLite's spelling (``?`` and ``:name``); the PostgreSQL
store translates the placeholders. Where the dialects differ, ``Conn.store`` tells which one runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

log = logging.getLogger(__name__)

Params = Sequence[Any] | dict[str, Any]
Store = Literal["sqlite", "postgres"]
P = ParamSpec("P")
T = TypeVar("T")
# A LIMIT that means "no limit" in both dialects (SQLite would take -1, PostgreSQL NULL).
NO_LIMIT = 2**63 - 1


class MigrationError(RuntimeError):
    """A migration failed; the database was left at the previous version."""


class IntegrityError(RuntimeError):
    """The database refused a row (a unique index, a check, a trigger, a foreign key); nothing of the
    transaction was written. The same on both stores."""


class Conn:
    """What a query function gets: statement helpers over one store's connection. Used only inside
    the database thread (by functions passed to run / run_tx). Rows answer by position and by
    column name on both stores."""

    store: Store

    # The public helpers are defined here once (tests call ``db.run(Conn.fetchval, sql)``); each store
    # implements the two that reach its driver.
    def _fetch(self, sql: str, params: Params) -> list[Any]:
        raise NotImplementedError

    def _many(self, sql: str, rows: Iterable[Params]) -> None:
        raise NotImplementedError

    def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        return self._fetch(sql, params)

    def fetchone(self, sql: str, params: Params = ()) -> Any | None:
        rows = self.fetchall(sql, params)  # fetch everything: a RETURNING statement must finish
        return rows[0] if rows else None

    def fetchval(self, sql: str, params: Params = (), default: Any = None) -> Any:
        row = self.fetchone(sql, params)
        return default if row is None or row[0] is None else row[0]

    def execute(self, sql: str, params: Params = ()) -> None:
        self.fetchall(sql, params)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self._many(sql, rows)

    @property
    def in_transaction(self) -> bool:
        raise NotImplementedError

    def begin(self, sql: str) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        """Roll back the open transaction, if any."""
        raise NotImplementedError


def query(fn: Callable[Concatenate[Conn, P], T]) -> Callable[..., Any]:
    """Marks a query function. Given a Conn (inside the database thread) it runs at once; given the
    Database or an open Transaction it returns an awaitable that runs it in the database thread, so
    ``await get_job(db, 7)`` is ``await db.run(get_job, 7)``."""

    @functools.wraps(fn)
    def call(c: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(c, Conn):
            return fn(c, *args, **kwargs)
        return c.run(fn, *args, **kwargs)

    return call


def _in_transaction(conn: Conn, begin: str, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
    conn.begin(begin)
    try:
        result = fn(conn, *args, **kwargs)
        conn.commit()
        return result
    except BaseException:
        conn.rollback()
        raise


def _begin(conn: Conn, sql: str) -> None:
    conn.begin(sql)


def _commit(conn: Conn) -> None:
    conn.commit()


def _rollback(conn: Conn) -> None:
    conn.rollback()


class Transaction:
    """An open transaction spanning several awaits (``Database.transaction()``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def run(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._db._call(fn, *args, **kwargs)


class Database:
    """The bot's database, either store: ``await db.run(get_job, 7)``; ``await db.run_tx(fn, ...)``.

    One connection per process, used from one thread; an asyncio lock serialises its use across
    tasks, so a statement of one task never lands inside another task's open transaction()."""

    store: Store
    # How each store opens a write transaction, and a read-only snapshot.
    BEGIN_WRITE = "BEGIN"
    BEGIN_READ = "BEGIN"

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None

    @property
    def name(self) -> str:
        """Where the database is, for messages: a file path, or a URL without its password."""
        raise NotImplementedError

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args)`` in the database thread, as one statement or inside the open transaction;
        store errors translated (DatabaseUnavailable, IntegrityError)."""
        raise NotImplementedError

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
        """``BEGIN; fn(conn, *args); COMMIT`` in one hop; ROLLBACK and re-raise if fn raises. On SQLite
        the write lock is taken first (BEGIN IMMEDIATE); on PostgreSQL fn takes the locks it needs."""
        return await self._run_tx(self.BEGIN_WRITE, fn, args, kwargs)

    async def run_read(
        self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like run_tx, read-only: one consistent snapshot for several reads."""
        return await self._run_tx(self.BEGIN_READ, fn, args, kwargs)

    async def _run_tx(self, begin: str, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        if self._owned():
            raise RuntimeError("run_tx inside transaction() of the same task: call tx.run instead")
        async with self._lock:
            return await self._call(_in_transaction, begin, fn, args, kwargs)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction across awaits: ``async with db.transaction() as tx: await tx.run(...)``.
        Prefer run_tx (one hop); this is for work that must await something between statements."""
        if self._owned():
            raise RuntimeError("nested Database.transaction() in the same task")
        async with self._lock:
            self._owner = asyncio.current_task()
            try:
                await self._call(_begin, self.BEGIN_WRITE)
                try:
                    yield Transaction(self)
                    await self._call(_commit)
                except BaseException:
                    await asyncio.shield(self._call(_rollback))
                    raise
            finally:
                self._owner = None

    async def user_version(self) -> int:
        """The schema version: the number of the last migration applied."""
        raise NotImplementedError

    async def backup(self, target: str | Path) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


# ---- where the database is ---------------------------------------------------------------------

_PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str) -> bool:
    return location.strip().lower().startswith(_PG_SCHEMES)


def describe_location(location: str | Path | SecretStr) -> str:
    """Where the database is, fit for messages and logs: a file path, or the URL with user, host,
    port and database only (never its password or options)."""
    if isinstance(location, SecretStr):
        location = location.get_secret_value()
    if not (isinstance(location, str) and is_postgres_url(location)):
        return str(location)
    try:
        parts = urlsplit(location.strip())
        user = f"{unquote(parts.username)}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        return f"postgresql://{user}{parts.hostname or ''}{port}{parts.path}"
    except ValueError:
        return "postgresql://(unreadable URL)"


# ---- migrations ------------------------------------------------------------------------------

_NAME = re.compile(r"^(\d+)-[\w.-]+\.sql$")
PG_FOLDER = "pg"  # beside the SQLite scripts: the PostgreSQL twin of each, numbered alike


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def _scripts(root: Traversable | Path) -> list[Migration]:
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_file():
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migrations must be numbered 1, 2, 3...: {migration.name} is out of place")
    return found


def load_migrations(directory: Traversable | Path | None = None, store: Store = "sqlite") -> list[Migration]:
    """Numbered ``NNN-name.sql`` files, in order; the package's own when no directory is given. The
    PostgreSQL scripts live in ``pg/`` beside them, one twin per SQLite script with the same name:
    a migration exists on both stores or on neither."""
    root: Traversable | Path = directory or resources.files("bot.db").joinpath("migrations")
    sqlite = _scripts(root)
    for expected, migration in enumerate(sqlite, start=1):
        if not re.search(rf"PRAGMA\s+user_version\s*=\s*{expected}\s*;", migration.sql, re.I):
            raise MigrationError(f"{migration.name} must set PRAGMA user_version = {expected} itself")
    if store == "sqlite":
        return sqlite
    pg_root = root.joinpath(PG_FOLDER)
    twins = _scripts(pg_root) if pg_root.is_dir() else []
    if [m.name for m in twins] != [m.name for m in sqlite]:
        raise MigrationError(
            f"the PostgreSQL migrations ({', '.join(m.name for m in twins) or 'none'}) must match the SQLite "
            f"ones by number and name ({', '.join(m.name for m in sqlite)})"
        )
    return twins
