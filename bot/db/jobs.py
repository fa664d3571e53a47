"""SQL for jobs and results. One function per query, run in the database thread (see connection.py).
State guards live in the WHERE clauses, so a transition that already happened matches no row and
the function answers False."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.db.connection import Conn, query
from bot.db.records import JobRecord, ResultRecord

_FINAL_ROW = "SELECT 1 FROM ledger l WHERE l.job_id = j.id AND l.kind IN ('settle', 'release')"
# At Runware, hence polled: submitted/processing, and timed-out or cancelled jobs that were sent
# (acknowledged or not) whose cost has not settled yet (the late window is closed by JobStore.expire).
_AT_RUNWARE = f"""
    (j.state IN ('submitted', 'processing')
     OR (j.state IN ('timed_out', 'cancelled') AND j.submit_sent_at IS NOT NULL
         AND NOT EXISTS ({_FINAL_ROW})))"""


def _jobs(rows: Sequence[Any]) -> list[JobRecord]:
    return [JobRecord.from_row(r) for r in rows]


@query
def insert_job(
    c: Conn,
    *,
    guild_id: int,
    channel_id: int,
    user_id: int,
    model_key: str,
    params: dict[str, Any],
    task_uuid: str,
    duration_s: int,
    variations: int,
    estimate_micro: int,
    created_at: float,
    day: str,
    month: str,
    upload_limit: int | None,
    parent_job_id: int | None,
    created_by: str | None = None,
) -> int:
    return int(
        c.fetchval(
            """INSERT INTO jobs (guild_id, channel_id, user_id, model_key, params, task_uuid, duration_s,
                   variations, estimate_micro, created_at, day, month, upload_limit, parent_job_id,
                   created_by)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            (guild_id, channel_id, user_id, model_key, json.dumps(params, sort_keys=True), task_uuid,
             duration_s, variations, estimate_micro, created_at, day, month, upload_limit, parent_job_id,
             created_by),
        )
    )


@query
def get_job(c: Conn, job_id: int) -> JobRecord | None:
    row = c.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
    return JobRecord.from_row(row) if row else None


@query
def get_job_by_task(c: Conn, task_uuid: str) -> JobRecord | None:
    row = c.fetchone("SELECT * FROM jobs WHERE task_uuid = ?", (task_uuid,))
    return JobRecord.from_row(row) if row else None


@query
def get_jobs(c: Conn, job_ids: Sequence[int]) -> list[JobRecord]:
    if not job_ids:
        return []
    marks = ",".join("?" * len(job_ids))
    return _jobs(c.fetchall(f"SELECT * FROM jobs WHERE id IN ({marks}) ORDER BY id", tuple(job_ids)))


@query
def set_image_uuids(c: Conn, job_id: int, image_uuids: dict[str, str]) -> bool:
    rows = c.fetchall(
        "UPDATE jobs SET image_uuids = ? WHERE id = ? RETURNING id",
        (json.dumps(image_uuids, sort_keys=True), job_id),
    )
    return bool(rows)


@query
def mark_sending(c: Conn, job_id: int, now: float) -> bool:
    """Before the submit goes out: from now on Runware may have the job. False when it is no
    longer a queued job without a cancel (then it must not be sent)."""
    rows = c.fetchall(
        """UPDATE jobs SET submit_sent_at = COALESCE(submit_sent_at, ?)
           WHERE id = ? AND state = 'queued' AND cancel_requested = 0 RETURNING id""",
        (now, job_id),
    )
    return bool(rows)


@query
def mark_submitted(c: Conn, job_id: int, now: float, next_poll_at: float) -> bool:
    rows = c.fetchall(
        """UPDATE jobs SET state = 'submitted', submitted_at = ?, next_poll_at = ?,
               submit_sent_at = COALESCE(submit_sent_at, ?)
           WHERE id = ? AND state = 'queued' RETURNING id""",
        (now, next_poll_at, now, job_id),
    )
    return bool(rows)


@query
def mark_processing(c: Conn, job_id: int) -> bool:
    rows = c.fetchall(
        "UPDATE jobs SET state = 'processing' WHERE id = ? AND state = 'submitted' RETURNING id", (job_id,)
    )
    return bool(rows)


@query
def late_success(c: Conn, job_id: int, error: str | None, failed_variations: int) -> bool:
    """A timed-out job whose results came late: succeeded, and its final message is owed again."""
    rows = c.fetchall(
        """UPDATE jobs SET state = 'succeeded', error = ?, failed_variations = ?, notified_at = NULL
           WHERE id = ? AND state = 'timed_out' RETURNING id""",
        (error, failed_variations, job_id),
    )
    return bool(rows)


@query
def finish_job(
    c: Conn, job_id: int, state: str, error: str | None, failed_variations: int, now: float
) -> bool:
    rows = c.fetchall(
        """UPDATE jobs SET state = ?, error = ?, failed_variations = ?, finished_at = ?
           WHERE id = ? AND state IN ('queued', 'submitted', 'processing') RETURNING id""",
        (state, error, failed_variations, now, job_id),
    )
    return bool(rows)


@query
def set_cancel_requested(c: Conn, job_id: int, actor: str) -> bool:
    rows = c.fetchall(
        """UPDATE jobs SET cancel_requested = 1, cancelled_by = ?
           WHERE id = ? AND state IN ('queued', 'submitted', 'processing') AND cancel_requested = 0
           RETURNING id""",
        (actor, job_id),
    )
    return bool(rows)


@query
def set_cancelled_by(c: Conn, job_id: int, actor: str) -> None:
    c.execute("UPDATE jobs SET cancelled_by = ? WHERE id = ?", (actor, job_id))


@query
def claim_jobs(c: Conn, job_ids: Sequence[int], run_id: str, now: float) -> None:
    c.executemany(
        "UPDATE jobs SET claimed_by = ?, claimed_at = ? WHERE id = ? AND state = 'queued'",
        [(run_id, now, job_id) for job_id in job_ids],
    )


@query
def unclaim_job(c: Conn, job_id: int) -> bool:
    rows = c.fetchall(
        "UPDATE jobs SET claimed_by = NULL WHERE id = ? AND state = 'queued' RETURNING id", (job_id,)
    )
    return bool(rows)


@query
def set_progress_message(c: Conn, job_id: int, message_id: int | None) -> None:
    c.execute("UPDATE jobs SET progress_message_id = ? WHERE id = ?", (message_id, job_id))


@query
def set_result_message(c: Conn, job_id: int, message_id: int | None) -> None:
    c.execute("UPDATE jobs SET result_message_id = ? WHERE id = ?", (message_id, job_id))


@query
def set_next_poll(c: Conn, job_id: int, next_poll_at: float | None) -> None:
    c.execute("UPDATE jobs SET next_poll_at = ? WHERE id = ?", (next_poll_at, job_id))


@query
def mark_polled(c: Conn, job_ids: Sequence[int], now: float, next_poll_at: float) -> None:
    c.executemany(
        "UPDATE jobs SET last_polled_at = ?, next_poll_at = ? WHERE id = ?",
        [(now, next_poll_at, job_id) for job_id in job_ids],
    )


@query
def mark_notified(c: Conn, job_id: int, now: float, result_message_id: int | None) -> bool:
    rows = c.fetchall(
        """UPDATE jobs SET notified_at = ?, result_message_id = COALESCE(?, result_message_id)
           WHERE id = ? AND notified_at IS NULL RETURNING id""",
        (now, result_message_id, job_id),
    )
    return bool(rows)


# ---- results --------------------------------------------------------------------------------


@query
def insert_result(
    c: Conn,
    *,
    job_id: int,
    video_uuid: str,
    video_url: str | None,
    seed: int | None,
    cost_micro: int | None,
    nsfw: bool,
    now: float,
) -> int | None:
    """The new row's id, or None when this videoUUID is already recorded."""
    return c.fetchval(
        """INSERT INTO results (job_id, video_uuid, video_url, seed, cost_micro, nsfw, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (video_uuid) DO NOTHING RETURNING id""",
        (job_id, video_uuid, video_url, seed, cost_micro, int(nsfw), now),
    )


@query
def results_for_job(c: Conn, job_id: int) -> list[ResultRecord]:
    rows = c.fetchall("SELECT * FROM results WHERE job_id = ? ORDER BY id", (job_id,))
    return [ResultRecord.from_row(r) for r in rows]


@query
def results_cost(c: Conn, job_id: int) -> tuple[int, int]:
    """(number of results, sum of their known costs)."""
    row = c.fetchone(
        "SELECT COUNT(*), COALESCE(SUM(cost_micro), 0) FROM results WHERE job_id = ?", (job_id,)
    )
    return (int(row[0]), int(row[1])) if row else (0, 0)


@query
def mark_delivered(c: Conn, result_id: int, now: float, local_path: str | None) -> bool:
    rows = c.fetchall(
        """UPDATE results SET delivered_at = ?, local_path = COALESCE(?, local_path)
           WHERE id = ? AND delivered_at IS NULL RETURNING id""",
        (now, local_path, result_id),
    )
    return bool(rows)


# ---- listings and resume --------------------------------------------------------------------


@query
def member_jobs(c: Conn, guild_id: int, user_id: int, limit: int) -> list[JobRecord]:
    return _jobs(
        c.fetchall(
            "SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, user_id, limit),
        )
    )


@query
def jobs_by_state(
    c: Conn, state: str | None, limit: int, guild_id: int | None = None
) -> list[JobRecord]:
    return _jobs(
        c.fetchall(
            """SELECT * FROM jobs WHERE (:state IS NULL OR state = :state)
                   AND (:guild IS NULL OR guild_id = :guild)
               ORDER BY id DESC LIMIT :limit""",
            {"state": state, "guild": guild_id, "limit": limit},
        )
    )


@query
def queued_jobs(c: Conn, limit: int) -> list[JobRecord]:
    return _jobs(c.fetchall("SELECT * FROM jobs WHERE state = 'queued' ORDER BY id LIMIT ?", (limit,)))


@query
def at_runware_jobs(c: Conn, limit: int) -> list[JobRecord]:
    rows = c.fetchall(f"SELECT * FROM jobs j WHERE {_AT_RUNWARE} ORDER BY j.id LIMIT ?", (limit,))
    return _jobs(rows)


_DUE = f"""SELECT * FROM jobs j WHERE {_AT_RUNWARE} AND (j.next_poll_at IS NULL OR j.next_poll_at <= :now)
           ORDER BY COALESCE(j.next_poll_at, 0), j.id LIMIT :limit"""


@query
def due_for_poll(c: Conn, now: float, limit: int) -> list[JobRecord]:
    return _jobs(c.fetchall(_DUE, {"now": now, "limit": limit}))


@query
def claim_due_for_poll(c: Conn, now: float, limit: int, lease_until: float) -> list[JobRecord]:
    """The jobs due for a poll (as due_for_poll), leased to the calling process until ``lease_until``:
    their next poll moves there, so no other process polls them meanwhile, and the poll's answer
    reschedules them (mark_polled). A process killed mid-poll leaves them due again for the others at
    ``lease_until``. PostgreSQL skips the rows another process is leasing at that moment (FOR UPDATE
    SKIP LOCKED); SQLite has one writer at a time. Run it in run_tx (the read and the lease are one)."""
    sql = _DUE + " FOR UPDATE OF j SKIP LOCKED" if c.store == "postgres" else _DUE
    due = _jobs(c.fetchall(sql, {"now": now, "limit": limit}))
    for start in range(0, len(due), 500):
        chunk = [job.id for job in due[start:start + 500]]
        c.execute(f"UPDATE jobs SET next_poll_at = ? WHERE id IN ({','.join('?' * len(chunk))})",
                  (lease_until, *chunk))
    return due


@query
def make_all_due(c: Conn, now: float) -> int:
    """Every job at Runware due now (on start: resume polling at once). Returns how many."""
    rows = c.fetchall(
        f"UPDATE jobs AS j SET next_poll_at = ? WHERE {_AT_RUNWARE} RETURNING id", (now,)
    )
    return len(rows)


@query
def active_jobs(c: Conn, limit: int) -> list[JobRecord]:
    """Queued, submitted and processing jobs (cancel_requested included), oldest first."""
    return _jobs(
        c.fetchall(
            "SELECT * FROM jobs WHERE state IN ('queued', 'submitted', 'processing') ORDER BY id LIMIT ?",
            (limit,),
        )
    )


@query
def active_job_states(c: Conn, limit: int) -> list[tuple[int, str]]:
    """(id, state) of the active_jobs(): a scan that decodes no JSON, for choosing whose progress
    to refresh (then only those are read in full)."""
    rows = c.fetchall(
        "SELECT id, state FROM jobs WHERE state IN ('queued', 'submitted', 'processing') ORDER BY id LIMIT ?",
        (limit,),
    )
    return [(int(r[0]), str(r[1])) for r in rows]


@query
def undelivered_jobs(c: Conn, limit: int) -> list[JobRecord]:
    """Jobs with results still to post: succeeded (or timed out, then a late result came), not
    cancelled. Flagged (NSFW) results are never posted, so they do not count."""
    return _jobs(
        c.fetchall(
            """SELECT * FROM jobs j WHERE j.state IN ('succeeded', 'timed_out') AND j.cancel_requested = 0
                   AND EXISTS (SELECT 1 FROM results r WHERE r.job_id = j.id
                               AND r.delivered_at IS NULL AND r.nsfw = 0)
               ORDER BY j.id LIMIT ?""",
            (limit,),
        )
    )


@query
def unnotified_jobs(c: Conn, limit: int) -> list[JobRecord]:
    return _jobs(
        c.fetchall(
            """SELECT * FROM jobs WHERE notified_at IS NULL
                   AND state IN ('succeeded', 'failed', 'timed_out', 'cancelled')
               ORDER BY id LIMIT ?""",
            (limit,),
        )
    )


@query
def recent_durations(c: Conn, model_key: str, duration_s: int, limit: int) -> list[float]:
    rows = c.fetchall(
        """SELECT finished_at - submitted_at FROM jobs
           WHERE model_key = ? AND duration_s = ? AND state = 'succeeded'
               AND submitted_at IS NOT NULL AND finished_at IS NOT NULL
           ORDER BY finished_at DESC LIMIT ?""",
        (model_key, duration_s, limit),
    )
    return [float(r[0]) for r in rows]
