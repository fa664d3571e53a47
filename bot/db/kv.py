"""SQL for bot-wide state: the key/value table."""

from __future__ import annotations

from bot.db.connection import Conn, query


@query
def kv_get(c: Conn, key: str) -> str | None:
    return c.fetchval("SELECT value FROM kv WHERE key = ?", (key,))


@query
def kv_set(c: Conn, key: str, value: str) -> None:
    c.execute(
        "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


@query
def kv_delete(c: Conn, key: str) -> bool:
    return bool(c.fetchall("DELETE FROM kv WHERE key = ? RETURNING 1", (key,)))

