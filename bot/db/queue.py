"""SQL for the fair queue (SPEC 3.6): which queued jobs go to Runware next."""

from __future__ import annotations

from bot.db.connection import NO_LIMIT, Conn, query

# Round-robin by member: every member's 1st waiting job comes before anyone's 2nd (rn); within a
# round the member whose last submission (claimed_at) is oldest goes first, never-submitted members
# before all; ties by queue order (the member's oldest waiting job).
_ORDER = """
WITH cand AS (
    SELECT id, guild_id, user_id,
           ROW_NUMBER() OVER (PARTITION BY guild_id, user_id ORDER BY id) AS rn,
           MIN(id) OVER (PARTITION BY guild_id, user_id) AS first_id
    FROM jobs
    WHERE state = 'queued' AND cancel_requested = 0
        AND (:run IS NULL OR claimed_by IS NULL OR claimed_by <> :run OR claimed_at < :stale)
)
SELECT c.id FROM cand c
ORDER BY c.rn,
         COALESCE((SELECT MAX(j.claimed_at) FROM jobs j
                   WHERE j.guild_id = c.guild_id AND j.user_id = c.user_id), 0),
         c.first_id
LIMIT :limit
"""


@query
def lock_queue(c: Conn) -> None:
    """Serialise taking jobs from the queue (count in flight, then claim) across processes: SQLite's
    BEGIN IMMEDIATE already does; PostgreSQL takes an advisory lock until the transaction ends."""
    if c.store == "postgres":
        c.execute("SELECT pg_advisory_xact_lock(hashtextextended('queue', 0))")


@query
def count_in_flight(c: Conn, run_id: str, stale_before: float) -> int:
    """Jobs at Runware plus the ones this process claimed (since ``stale_before``) and is submitting."""
    return int(
        c.fetchval(
            """SELECT COUNT(*) FROM jobs WHERE state IN ('submitted', 'processing')
                   OR (state = 'queued' AND claimed_by = ? AND claimed_at >= ?)""",
            (run_id, stale_before),
            default=0,
        )
    )


@query
def next_in_queue(c: Conn, run_id: str, stale_before: float, limit: int) -> list[int]:
    """Ids of waiting jobs that this run has not claimed (or claimed before ``stale_before``),
    in fair order."""
    rows = c.fetchall(_ORDER, {"run": run_id, "stale": stale_before, "limit": limit})
    return [int(r[0]) for r in rows]


@query
def queue_order(c: Conn) -> list[int]:
    """Every waiting job in fair order (claimed or not), for queue positions."""
    rows = c.fetchall(_ORDER, {"run": None, "stale": None, "limit": NO_LIMIT})
    return [int(r[0]) for r in rows]


@query
def stale_cancelled_claims(c: Conn, stale_before: float) -> list[int]:
    """Queued jobs whose cancel came while they were claimed, and whose claim has gone stale."""
    rows = c.fetchall(
        """SELECT id FROM jobs WHERE state = 'queued' AND cancel_requested = 1
               AND (claimed_by IS NULL OR claimed_at < ?) ORDER BY id""",
        (stale_before,),
    )
    return [int(r[0]) for r in rows]
