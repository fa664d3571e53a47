"""SQL for the audit trail of moderator and operator actions."""

from __future__ import annotations

from bot.db.connection import Conn, query
from bot.db.records import AuditRecord


@query
def insert_audit(
    c: Conn,
    *,
    guild_id: int,
    actor: str,
    action: str,
    target: str | None,
    before: str | None,
    after: str | None,
    reason: str | None,
    at: float,
) -> int:
    return int(
        c.fetchval(
            """INSERT INTO audit (at, guild_id, actor, action, target, before, after, reason)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            (at, guild_id, actor, action, target, before, after, reason),
        )
    )


@query
def list_audit(c: Conn, guild_id: int, limit: int) -> list[AuditRecord]:
    rows = c.fetchall(
        "SELECT * FROM audit WHERE guild_id = ? ORDER BY id DESC LIMIT ?", (guild_id, limit)
    )
    return [AuditRecord.from_row(r) for r in rows]
