"""The PostgreSQL store (psycopg 3): the same face as SQLite, for several processes on one database.

One connection per process, used from one daemon thread, like the SQLite store. The query functions'
SQL is written in SQLite's spelling; ``translate`` turns ``?`` and ``:name`` into psycopg's
placeholders. Parameters are bound client-side (psycopg's ClientCursor, properly quoted): the shared
SQL tests ``:x IS NULL`` on parameters whose type only their value tells.

Transactions: READ COMMITTED; a write transaction takes the locks its checks need itself (advisory
locks per member, guild and the bot, see money.lock_spend), and the state guards in the WHERE clauses
make every transition happen once however many processes race for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Loader

from bot.db.connection import (
    Conn,
    Database,
    IntegrityError,
    Migration,
    MigrationError,
    Params,
    describe_location,
    load_migrations,
)
from bot.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_TIMEOUT = "10s"  # like SQLite's busy timeout: a lock held longer is an outage, told as one
MIGRATION_LOCK = 0x6B6C696E67  # pg_advisory_xact_lock key: one migrating process at a time
CONNECT_TIMEOUT_S = 10


# ---- SQL ------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|--[^\n]*|::|\?|:([A-Za-z_]\w*)|%")


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """SQLite placeholders to psycopg's: ``?`` -> ``%s``, ``:name`` -> ``%(name)s``; inside string
    literals, quoted names, comments and ``::`` casts none are read, but every ``%`` becomes ``%%``
    (psycopg reads a lone ``%`` as a placeholder wherever it is)."""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if match.group(1):
            return f"%({match.group(1)})s"
        return token.replace("%", "%%")

    return _TOKEN.sub(one, sql)


class Row(Sequence[Any]):
    """A row by position or by column name, like sqlite3.Row."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def keys(self) -> list[str]:
        return list(self._index)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=True))!r})"


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    index = {d.name: i for i, d in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


class _IntegralNumeric(Loader):
    """SUM over BIGINT columns answers NUMERIC in PostgreSQL (Decimal); the schema has no NUMERIC
    column, so every numeric here is a sum or a count of integers: load it as int, like SQLite."""

    def load(self, data: Any) -> Any:
        text = bytes(data).decode()
        if text in ("NaN", "Infinity", "-Infinity"):
            return float(text)
        return int(text) if "." not in text else float(text)


class PgConn(Conn):
    store = "postgres"

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def _fetch(self, sql: str, params: Params) -> list[Any]:
        cur = self.raw.execute(translate(sql), params)  # always params: '%%' is then read as '%'
        return cur.fetchall() if cur.description is not None else []

    def _many(self, sql: str, rows: Iterable[Params]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(translate(sql), list(rows))

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def begin(self, sql: str) -> None:
        self.raw.execute(sql)

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self.raw.closed or self.raw.broken:
            return
        if self.in_transaction:
            self.raw.execute("ROLLBACK")


# ---- the thread ---------------------------------------------------------------------------------


class _Worker:
    """One daemon thread that runs the store's calls in order: a process that exits without close()
    must not hang on it (an unfinished transaction is rolled back by the server)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="klingbot-postgres", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not None:
            call, future = item
            try:
                result = call()
            except BaseException as exc:  # handed to the awaiting task
                future.get_loop().call_soon_threadsafe(_settle, future, None, exc)
            else:
                future.get_loop().call_soon_threadsafe(_settle, future, result, None)

    def submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((call, future))
        return future

    def stop(self) -> None:
        self._jobs.put(None)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled; the call itself ran to its end
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


# ---- the database --------------------------------------------------------------------------------


class PostgresDatabase(Database):
    store = "postgres"
    BEGIN_WRITE = "BEGIN"
    BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self, url: str) -> None:
        self._url = url
        self._worker = _Worker()
        self._conn: PgConn | None = None
        super().__init__()

    @property
    def name(self) -> str:
        return describe_location(self._url)

    def _connection(self) -> PgConn:
        """The connection (in the worker thread), reconnecting after the server went away."""
        if self._conn is None or self._conn.raw.closed or self._conn.raw.broken:
            self._conn = PgConn(_connect(self._url))
        return self._conn

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            return fn(self._connection(), *args, **kwargs)

        try:
            return await self._worker.submit(call)
        except pg_errors.IntegrityError as exc:
            raise IntegrityError(_message(exc)) from exc
        except pg_errors.RaiseException as exc:  # a trigger's RAISE: the row broke a ledger rule
            raise IntegrityError(_message(exc)) from exc
        except pg_errors.LockNotAvailable as exc:
            raise DatabaseUnavailable("The bot's database is busy with another process and did not free up "
                                      "in time; nothing was changed. Please try again in a moment.") from exc
        except (pg_errors.DiskFull, pg_errors.OutOfMemory) as exc:
            raise DatabaseUnavailable("The bot's database server is out of space; nothing was changed. "
                                      "The operator needs to free some.") from exc
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable("The bot's database server is not answering; nothing was changed. "
                                      "Please try again in a moment.") from exc

    async def user_version(self) -> int:
        return int(await self.run(_schema_version))

    async def backup(self, target: str | Path) -> None:
        raise NotImplementedError("a PostgreSQL database is backed up with pg_dump")

    async def close(self) -> None:
        async with self._lock:
            await self._worker.submit(self._close_raw)  # in the thread that owns the connection
        self._worker.stop()

    def _close_raw(self) -> None:
        if self._conn is not None and not self._conn.raw.closed:
            self._conn.raw.close()


def _message(exc: psycopg.Error) -> str:
    diag = exc.diag
    return diag.message_primary or str(exc).splitlines()[0]


def _connect(url: str) -> psycopg.Connection[Any]:
    raw = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor,
                          row_factory=_row_factory, connect_timeout=CONNECT_TIMEOUT_S,
                          application_name="klingbot")
    raw.adapters.register_loader("numeric", _IntegralNumeric)
    raw.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    raw.execute("SET TIME ZONE 'UTC'")
    return raw


def _schema_version(conn: Conn) -> int:
    return int(conn.fetchval("SELECT version FROM schema_version WHERE id = 1", default=0))


_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO schema_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
"""


def _migrate(conn: PgConn, migrations: list[Migration]) -> None:
    """Each migration in its own transaction (PostgreSQL's DDL is transactional), under an advisory
    lock so that processes starting together apply it once; the version row moves with it."""
    raw = conn.raw
    for migration in migrations:
        try:
            with raw.transaction():
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                raw.execute(_SCHEMA_VERSION)
                if _schema_version(conn) >= migration.version:
                    continue
                raw.execute(migration.sql)
                raw.execute("UPDATE schema_version SET version = %s WHERE id = 1", (migration.version,))
        except psycopg.Error as exc:
            raise MigrationError(f"migration {migration.name} failed: {_message(exc)}") from exc
        log.info("database migrated to version %d (%s)", migration.version, migration.name)


async def open_postgres(url: str, *, migrations_dir: Path | None = None) -> PostgresDatabase:
    """Connect to and migrate the PostgreSQL database at ``url`` (which must exist)."""
    db = PostgresDatabase(url)
    try:
        migrations = load_migrations(migrations_dir, store="postgres")
        await db._call(_migrate, migrations)
    except BaseException:
        await db.close()
        raise
    return db
