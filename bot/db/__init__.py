"""Persistence: SQLite through aiosqlite. All SQL of the bot lives in this package."""

from bot.db.connection import Database, Executor, MigrationError, Tx, open_database

__all__ = ["Database", "Executor", "MigrationError", "Tx", "open_database"]
