"""Persistence: SQLite through aiosqlite. All SQL of the bot lives in this package: query functions
in queries (synchronous, run in the database thread via Database.run / run_tx), typed rows in records."""

from bot.db.connection import Conn, Database, MigrationError, Transaction, open_database

__all__ = ["Conn", "Database", "MigrationError", "Transaction", "open_database"]
