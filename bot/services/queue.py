"""Fair queue (SPEC 3.6): at most ``max_in_flight`` jobs at Runware; waiting jobs are taken
round-robin by member, the member whose last submission is oldest first, so one heavy user cannot
starve the rest. The queue is the jobs table itself, so it survives restarts.

Jobs are taken through ``JobStore.next_to_submit`` (one transaction over ``take``). Taking a job
claims it for this process (``claimed_by = RUN_ID``) so the next tick does not take it
again while its submit is in flight. A submit that fails for now should give the job back with
``JobStore.unclaim``; a claim older than ``CLAIM_TTL_S`` (forgotten, or left by a dead process) is
taken again anyway. Submitting twice is harmless: the job keeps its taskUUID, and Runware's
conflictTaskUUID says the first one got through.

Once its submit has been sent (``submit_sent_at``, written before the request) a queued job may be at
Runware even though 'submitted' was never written: cancelled then, it is not free but
``cancel_sent``: final, its reserve open, polled like any job cancelled at Runware until the cost
comes or the late window closes.

Every cancel here notes the job in the transaction's ``notes`` (the JobStore hands them to the
metrics once it commits), so a cancelled job is counted once, whichever path cancelled it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable

from bot.db import Conn, Database
from bot.db.jobs import claim_jobs, finish_job, get_job, get_jobs, set_cancelled_by, set_next_poll
from bot.db.money import insert_ledger
from bot.db.queue import count_in_flight, lock_queue, next_in_queue, queue_order, stale_cancelled_claims
from bot.db.records import JobRecord
from bot.services.enhance import enhancement_charge
from bot.services.metrics import JobFinished

SYSTEM_ACTOR = "system"  # who acts when no member or moderator does (ledger, audit)

HOST = socket.gethostname()
RUN_ID = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"  # this process
CLAIM_TTL_S = 120.0


def creator_may_be_uploading(job: JobRecord, now: float, *, run_id: str = RUN_ID) -> bool:
    """A job that needs frames but has no imageUUIDs yet, created by ANOTHER process: that process
    may still be uploading them (a `klingbot generate` beside the bot). True while its creator is
    alive (or on another host, where we cannot tell) and the job is younger than the claim TTL;
    False when it is dead, so its frames are lost with it."""
    if not job.created_by or job.created_by == run_id or now - job.created_at >= CLAIM_TTL_S:
        return False
    host, _, rest = job.created_by.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOST or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def take(c: Conn, max_in_flight: int, run_id: str, now: float, notes: list[JobFinished]) -> list[JobRecord]:
    """Claim and return the jobs to submit now, in fair order (possibly none): the transaction of
    ``JobStore.next_to_submit``, which counts the cancels it ``notes``."""
    stale = now - CLAIM_TTL_S
    lock_queue(c)
    # A cancel that came while a job was claimed, whose taker never came back: finish it here.
    for job in get_jobs(c, stale_cancelled_claims(c, stale)):
        cancel_waiting(c, job, job.cancelled_by or SYSTEM_ACTOR, now, notes)
    slots = max_in_flight - count_in_flight(c, run_id, stale)
    if slots <= 0:
        return []
    ids = next_in_queue(c, run_id, stale, slots)
    if not ids:
        return []
    claim_jobs(c, ids, run_id, now)
    jobs = {job.id: job for job in get_jobs(c, ids)}
    return [jobs[i] for i in ids]


def cancel_waiting(c: Conn, job: JobRecord, actor: str, now: float, notes: list[JobFinished]) -> bool:
    """Cancel a queued job that nobody is submitting: free if it was never sent, else cancel_sent."""
    if job.may_be_at_runware:
        return cancel_sent(c, job, actor, now, notes)
    return cancel_queued(c, job, actor, now, notes)


def _note_cancelled(notes: list[JobFinished], job: JobRecord, now: float) -> None:
    """In the same place as the write: no path can cancel a job without it being counted."""
    notes.append(JobFinished(job.model_key, "cancelled", job.submitted_at, now, None))


def job_ledger(c: Conn, job: JobRecord, kind: str, amount: int, reason: str | None, now: float) -> int | None:
    """One ledger row of ``job``'s money (reserve, settle, release), written by the bot itself."""
    return insert_ledger(
        c, kind=kind, guild_id=job.guild_id, user_id=job.user_id, job_id=job.id, amount_micro=amount,
        day=job.day, month=job.month, actor=SYSTEM_ACTOR, reason=reason, at=now,
        reserved_micro=job.estimate_micro,
    )


def open_send_window(c: Conn, job_id: int, now: float, notes: list[JobFinished],
                     mark_sending: Callable[[Conn, int, float], bool]) -> bool:
    """A queued job's call (the submit, or the prompt enhancement) is about to go out: True once
    ``mark_sending`` wrote it down first. False when it must not go: finished meanwhile, or a cancel
    was asked for (finished here: free if nothing was ever sent)."""
    job = get_job(c, job_id)
    if job is None or job.state != "queued":
        return False
    if job.cancel_requested:
        cancel_waiting(c, job, job.cancelled_by or SYSTEM_ACTOR, now, notes)
        return False
    return mark_sending(c, job_id, now)


def cancel_sent(c: Conn, job: JobRecord, actor: str, now: float, notes: list[JobFinished]) -> bool:
    """A queued job whose submit went out unconfirmed (its answer lost, its sender killed): cancelled,
    the reserve left open. The poller asks Runware about its taskUUID: a cost settles, and the late
    window's end releases the reserve when Runware never had it."""
    if not finish_job(c, job.id, "cancelled", f"Cancelled by {actor}", 0, now):
        return False
    set_cancelled_by(c, job.id, actor)
    set_next_poll(c, job.id, now)
    _note_cancelled(notes, job, now)
    return True


def cancel_queued(c: Conn, job: JobRecord, actor: str, now: float, notes: list[JobFinished]) -> bool:
    """A job whose video never reached Runware: cancelled, and its reserve released (free), unless
    its prompt enhancement was sent: that settles (bot/services/enhance.py)."""
    if not finish_job(c, job.id, "cancelled", f"Cancelled by {actor}", 0, now):
        return False
    set_cancelled_by(c, job.id, actor)
    enhancement = enhancement_charge(job)
    job_ledger(c, job, "settle" if enhancement else "release", enhancement or job.estimate_micro,
               "cancelled before submit", now)
    _note_cancelled(notes, job, now)
    return True


async def queue_positions(db: Database) -> dict[int, int]:
    """job id -> 1-based place among all waiting jobs, for every queued job (one query per tick)."""
    return {job_id: place for place, job_id in enumerate(await db.run(queue_order), start=1)}


async def queue_position(db: Database, job_id: int) -> int | None:
    """1-based place of a queued job in the fair order; None when it is not waiting."""
    return (await queue_positions(db)).get(job_id)
