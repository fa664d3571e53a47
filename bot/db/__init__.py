"""Persistence, on SQLite (the default) or PostgreSQL (several processes). All SQL of the bot lives
in this package, one synchronous function per query, grouped by concept and imported by name
(``from bot.db.jobs import get_job``):

    jobs     jobs and their results, the listings the engine resumes from
    money    the ledger: reserve, settle, release, refund, credit; spend derived from it
    queue    the fair queue: which waiting job goes to Runware next
    guilds   a guild's settings, limit overrides, channels, blocklist, bans
    runs     one per engine process: its lease, its last poll round, which jobs it owns
    kv       bot-wide key/value state
    audit    the trail of moderator and operator actions
    gallery  the results shared to a guild's gallery channel
    reports  usage reports straight from the ledger

Typed rows are in records; the face (Database, Conn, transactions, migrations) in connection, the two
stores behind it in sqlite and postgres (``open_database`` picks one from where it is pointed). A
query function given a Conn runs at once (inside the database thread); given the Database it returns
an awaitable: ``await get_job(db, 7)`` is ``await db.run(get_job, 7)``.
"""

from pathlib import Path

from pydantic import SecretStr

from bot.db.connection import Conn, Database, IntegrityError, MigrationError, Transaction, is_postgres_url


async def open_database(location: str | Path | SecretStr, *, migrations_dir: Path | None = None) -> Database:
    """Open and migrate the database at ``location``: a ``postgresql://`` URL (a SecretStr when it
    comes from the configuration: it may carry a password) selects PostgreSQL, anything else is the
    path of a SQLite file (created, with its directory, if needed)."""
    if isinstance(location, SecretStr):
        location = location.get_secret_value()
    # Each store is imported when chosen: a SQLite bot never loads the PostgreSQL driver.
    if isinstance(location, str) and is_postgres_url(location):
        from bot.db.postgres import open_postgres

        return await open_postgres(location, migrations_dir=migrations_dir)
    from bot.db.sqlite import open_sqlite

    return await open_sqlite(location, migrations_dir=migrations_dir)


__all__ = ["Conn", "Database", "IntegrityError", "MigrationError", "Transaction", "open_database"]
