"""Runs and job ownership (migration 006), and each run's last finished poll round (007).

Each engine registers a run and renews its lease while it lives; a job is owned by one run (its
``owner``, else its creator) and only that run shows and delivers it. A job whose owner's lease has
lapsed, or whose owner ended, is taken over by another run with ``take_over`` (a compare-and-set:
two runs racing for the same job cannot both get it).

Polling is not owned: any run polls any job at Runware, and one poll is claimed by moving the job's
``next_poll_at`` past the poll (``jobs.claim_due_for_poll``), so a run that dies mid-poll leaves it due
again for the others. Ownership says who talks to the member; that claim says who asks Runware."""

from __future__ import annotations

from bot.db.connection import Conn, query
from bot.db.records import JobRecord, RunRecord

_OWNER = "COALESCE(owner, created_by)"
_LIVE = "SELECT run_id FROM runs WHERE lease_until > ?"


@query
def register_run(c: Conn, *, run_id: str, kind: str, host: str, pid: int, now: float, lease_until: float,
                 deliver_to: str | None = None) -> None:
    c.execute(
        """INSERT INTO runs (run_id, kind, host, pid, started_at, lease_until, deliver_to)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (run_id) DO UPDATE SET lease_until = excluded.lease_until""",
        (run_id, kind, host, pid, now, lease_until, deliver_to),
    )


@query
def renew_run(c: Conn, run_id: str, lease_until: float) -> bool:
    """False when the run had ended (another run may own its jobs by now)."""
    return bool(c.fetchall("UPDATE runs SET lease_until = ? WHERE run_id = ? AND lease_until > 0 RETURNING 1",
                           (lease_until, run_id)))


@query
def end_run(c: Conn, run_id: str) -> None:
    c.execute("UPDATE runs SET lease_until = 0 WHERE run_id = ?", (run_id,))


@query
def record_poll_round(c: Conn, run_id: str, at: float) -> None:
    """The run finished a poll round at ``at`` (`klingbot health` checks each bot run's)."""
    c.execute("UPDATE runs SET polled_at = ? WHERE run_id = ?", (at, run_id))


@query
def live_runs(c: Conn, now: float) -> list[RunRecord]:
    return [RunRecord.from_row(r) for r in c.fetchall("SELECT * FROM runs WHERE lease_until > ?", (now,))]


@query
def orphaned_jobs(c: Conn, now: float, limit: int = 5000) -> list[JobRecord]:
    """Jobs not finished for their member (final message not posted) whose owner is not a live run."""
    rows = c.fetchall(
        f"""SELECT * FROM jobs WHERE notified_at IS NULL
               AND ({_OWNER} IS NULL OR {_OWNER} NOT IN ({_LIVE}))
             ORDER BY id LIMIT ?""",
        (now, limit),
    )
    return [JobRecord.from_row(r) for r in rows]


@query
def take_over(c: Conn, job_ids: list[int], run_id: str, now: float) -> list[int]:
    """Make ``run_id`` the owner of those of ``job_ids`` that are still orphaned; returns their ids."""
    if not job_ids:
        return []
    marks = ",".join("?" * len(job_ids))
    rows = c.fetchall(
        f"""UPDATE jobs SET owner = ? WHERE id IN ({marks}) AND notified_at IS NULL
               AND ({_OWNER} IS NULL OR {_OWNER} NOT IN ({_LIVE}))
            RETURNING id""",
        (run_id, *job_ids, now),
    )
    return sorted(int(r["id"]) for r in rows)


@query
def set_deliver_to(c: Conn, job_id: int, deliver_to: str) -> None:
    """Where a terminal job's videos go (its run's --out), also for a run that takes it over."""
    c.execute("UPDATE jobs SET deliver_to = ? WHERE id = ?", (deliver_to, job_id))


@query
def prune_runs(c: Conn, ended_before: float) -> int:
    """Forget runs whose lease lapsed before ``ended_before`` and that own no unfinished job."""
    rows = c.fetchall(
        f"""DELETE FROM runs WHERE lease_until < ?
               AND run_id NOT IN (SELECT {_OWNER} FROM jobs WHERE notified_at IS NULL AND {_OWNER} IS NOT NULL)
            RETURNING 1""",
        (ended_before,),
    )
    return len(rows)
