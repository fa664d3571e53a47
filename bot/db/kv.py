"""SQL for bot-wide state: the key/value table and the heartbeat the health check reads."""

from __future__ import annotations

from bot.db.connection import Conn, query
from bot.db.records import Heartbeat


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


@query
def write_heartbeat(c: Conn, at: float, pid: int) -> None:
    c.execute(
        """INSERT INTO heartbeat (id, at, pid) VALUES (1, ?, ?)
           ON CONFLICT (id) DO UPDATE SET at = excluded.at, pid = excluded.pid""",
        (at, pid),
    )


@query
def read_heartbeat(c: Conn) -> Heartbeat | None:
    row = c.fetchone("SELECT at, pid FROM heartbeat WHERE id = 1")
    return Heartbeat(float(row["at"]), int(row["pid"])) if row else None
