"""Persistence. All SQL of the bot lives in this package, one synchronous function per query, grouped
by concept and imported by name (``from bot.db.jobs import get_job``):

    jobs     jobs and their results, the listings the engine resumes from
    money    the ledger: reserve, settle, release, refund, credit; spend derived from it
    queue    the fair queue: which waiting job goes to Runware next
    guilds   a guild's settings, limit overrides, channels, blocklist, bans
    kv       bot-wide key/value state and the heartbeat
    audit    the trail of moderator and operator actions
    reports  usage reports straight from the ledger

Typed rows are in records; the connection, transactions and migrations in connection. A query
function given a Conn runs at once (inside the database thread); given the Database it returns an
awaitable: ``await get_job(db, 7)`` is ``await db.run(get_job, 7)``.
"""

from bot.db.connection import Conn, Database, MigrationError, Transaction, open_database

__all__ = ["Conn", "Database", "MigrationError", "Transaction", "open_database"]
