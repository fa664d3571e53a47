"""SQL for usage reports (the moderator console and the operator CLI), straight from the ledger."""

from __future__ import annotations

from typing import Any, Literal

from bot.db.connection import Conn, query

# Fixed expressions picked from this whitelist, never user text.
_GROUP_KEYS = {"user": "CAST(j.user_id AS TEXT)", "model": "j.model_key", "day": "j.day"}
USAGE_COLUMNS = ("key", "jobs", "videos", "reserved_micro", "settled_micro", "released_micro",
                 "refunded_micro", "open_micro")


@query
def usage_by(
    c: Conn,
    *,
    guild_id: int | None,
    since_day: str | None,
    by: Literal["user", "model", "day"],
) -> list[dict[str, Any]]:
    """Jobs created on or after ``since_day`` (None = all time) of ``guild_id`` (None = every guild
    and the terminal), grouped by ``by``, with the sum of each ledger kind. The unique ledger indexes
    allow at most one row per kind and job, so the joins never count a row twice. ``videos`` counts
    the variations of jobs that were not released (as the daily quota does); ``open_micro`` the
    reserves not yet settled or released."""
    key = _GROUP_KEYS[by]
    order = "key" if by == "day" else "settled_micro DESC, key"
    rows = c.fetchall(
        f"""SELECT {key} AS key, COUNT(*) AS jobs,
                SUM(CASE WHEN rel.id IS NULL THEN j.variations ELSE 0 END) AS videos,
                SUM(COALESCE(r.amount_micro, 0)) AS reserved_micro,
                SUM(COALESCE(s.amount_micro, 0)) AS settled_micro,
                SUM(COALESCE(rel.amount_micro, 0)) AS released_micro,
                SUM(COALESCE(rf.amount_micro, 0)) AS refunded_micro,
                SUM(CASE WHEN s.id IS NULL AND rel.id IS NULL THEN COALESCE(r.amount_micro, 0) ELSE 0 END)
                    AS open_micro
            FROM jobs j
            LEFT JOIN ledger r ON r.job_id = j.id AND r.kind = 'reserve'
            LEFT JOIN ledger s ON s.job_id = j.id AND s.kind = 'settle'
            LEFT JOIN ledger rel ON rel.job_id = j.id AND rel.kind = 'release'
            LEFT JOIN ledger rf ON rf.job_id = j.id AND rf.kind = 'refund'
            WHERE (:g IS NULL OR j.guild_id = :g) AND (:since IS NULL OR j.day >= :since)
            GROUP BY key ORDER BY {order}""",
        {"g": guild_id, "since": since_day},
    )
    return [{name: (str(r[name]) if name == "key" else int(r[name] or 0)) for name in USAGE_COLUMNS}
            for r in rows]
