"""Databases as an older release left them: the shipped migrations up to a version, both stores."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.db.connection import load_migrations

SHIPPED = Path(__file__).resolve().parents[2] / "bot" / "db" / "migrations"


def migrations_before(tmp_path: Path, version: int) -> Path:
    """A migrations folder (SQLite and its pg/ twins) holding the shipped ones below ``version``:
    ``open_database(store, migrations_dir=...)`` on it makes a database at ``version - 1``."""
    before = tmp_path / f"before-{version:03d}"
    (before / "pg").mkdir(parents=True)
    for migration in load_migrations()[:version - 1]:
        shutil.copy(SHIPPED / migration.name, before / migration.name)
        shutil.copy(SHIPPED / "pg" / migration.name, before / "pg" / migration.name)
    return before
