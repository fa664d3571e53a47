"""The persistent job state machine (SPEC 3.1). No network here: the engine that talks to Runware
calls these methods. Each transition is one transaction (one hop to the database thread), then its
failpoint, so a process killed right after any of them resumes from the database alone.

Money rules applied by ``finish``: a known cost settles (a failure billed 0 releases instead); an
unknown cost releases, except for jobs that may still be billed (timed out, or cancelled after they
were sent): their reserve stays open until a late ``finish`` brings the cost, or ``expire``
(the poller, once the late window has passed) settles what arrived and releases the rest. A prompt
enhancement's cost (bot/services/enhance.py) settles with the videos' in the same row, or alone.

The submit window: ``begin_submit`` writes ``submit_sent_at`` before the request goes out, so from
then on the job counts as possibly at Runware even while it is still 'queued' (killed before
``mark_submitted``, or the answer lost). A cancel then never frees it: the submitter's outcome
decides while it lives, and otherwise the job is cancelled with its reserve open and polled.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from bot import failpoints
from bot.db import Conn, Database
from bot.db.enhance import set_enhance_reserve
from bot.db.jobs import (
    finish_job,
    get_job,
    get_jobs,
    insert_job,
    insert_result,
    late_success,
    mark_delivered,
    mark_notified,
    mark_sending,
    mark_submitted,
    results_cost,
    results_for_job,
    set_cancel_requested,
    set_image_uuids,
    unclaim_job,
)
from bot.db.metrics import delivered_result_facts
from bot.db.money import insert_ledger, job_money, lock_spend
from bot.db.records import FINAL_STATES, JobRecord
from bot.errors import LimitExceeded
from bot.runware.models import VideoResult
from bot.services import queue
from bot.services.clock import Clock, day_of, month_of
from bot.services.enhance import enhancement_charge
from bot.services.enhance_steps import EnhanceSteps
from bot.services.metrics import JobFinished, Metrics
from bot.services.queue import SYSTEM_ACTOR, job_ledger
from bot.services.quotas import TERMINAL_SCOPE, Member, Quotas


def _actor(member: Member) -> str:
    return "terminal" if member.guild_id == TERMINAL_SCOPE else f"user:{member.user_id}"


def _may_still_bill(state: str, job: JobRecord) -> bool:
    return state == "timed_out" or (state == "cancelled" and job.may_be_at_runware)


class JobStore(EnhanceSteps):
    def __init__(
        self,
        db: Database,
        quotas: Quotas,
        clock: Clock,
        tz: tzinfo,
        *,
        run_id: str = queue.RUN_ID,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.quotas = quotas
        self.clock = clock
        self.tz = tz
        self.run_id = run_id
        self.metrics = metrics

    # ---- creation (the reserve) --------------------------------------------------------------------

    async def precheck(
        self,
        member: Member,
        *,
        channel_id: int,
        blocklist_text: str | None = None,
        estimate_micro: int | None = None,
        variations: int = 1,
    ) -> None:
        """The reserve's checks without reserving (before attachments are fetched: SPEC 3.2).
        Limits are checked too when ``estimate_micro`` is given."""
        try:
            await self.db.run_read(
                self._checks, member, channel_id, blocklist_text, estimate_micro, variations, self.clock.now()
            )
        except LimitExceeded as exc:
            await self.quotas.note_refusal(member, exc)
            raise

    def _checks(
        self, c: Conn, member: Member, channel_id: int, blocklist_text: str | None,
        estimate_micro: int | None, variations: int, now: float,
    ) -> None:
        self.quotas.check_access(c, member)
        self.quotas.check_place(c, member, channel_id, blocklist_text)
        if estimate_micro is not None:
            self.quotas.check_limits(c, member, estimate_micro=estimate_micro, variations=variations, now=now)

    async def create(
        self,
        member: Member,
        *,
        channel_id: int,
        model_key: str,
        params: dict[str, Any],
        task_uuid: str,
        duration_s: int,
        variations: int,
        estimate_micro: int,
        upload_limit: int | None = None,
        parent_job_id: int | None = None,
        blocklist_text: str | None = None,
        enhance_reserve_micro: int | None = None,
    ) -> JobRecord:
        """Check everything and reserve the estimate in ONE write transaction (SQLite: BEGIN IMMEDIATE;
        PostgreSQL: lock_spend's locks, held only by the limit checks and the writes), writing the
        queued job and its reserve row. Raises LimitExceeded / NotPermitted / InvalidInput /
        RunwareUnavailable with nothing written."""
        if variations < 1 or duration_s < 1 or estimate_micro < 0:
            raise ValueError("variations and duration_s must be positive, estimate_micro >= 0")
        try:
            job = await self.db.run_tx(
                self._create, member, self.clock.now(), blocklist_text,
                dict(channel_id=channel_id, model_key=model_key, params=params, task_uuid=task_uuid,
                     duration_s=duration_s, variations=variations, estimate_micro=estimate_micro,
                     upload_limit=upload_limit, parent_job_id=parent_job_id),
                enhance_reserve_micro,
            )
        except LimitExceeded as exc:
            await self.quotas.note_refusal(member, exc)
            raise
        failpoints.hit("after_reserve")
        return job

    def _create(
        self, c: Conn, member: Member, now: float, blocklist_text: str | None, fields: dict[str, Any],
        enhance_reserve_micro: int | None,
    ) -> JobRecord:
        self._checks(c, member, fields["channel_id"], blocklist_text, None, fields["variations"], now)
        lock_spend(c, member.guild_id, member.user_id,
                   bot_wide=self.quotas.limits.global_daily_micro_usd is not None)
        self.quotas.check_limits(c, member, estimate_micro=fields["estimate_micro"], variations=fields["variations"],
                                 now=now)
        day, month = day_of(now, self.tz), month_of(now, self.tz)
        job_id = insert_job(c, guild_id=member.guild_id, user_id=member.user_id, created_at=now, day=day,
                              month=month, created_by=self.run_id, **fields)
        insert_ledger(
            c, kind="reserve", guild_id=member.guild_id, user_id=member.user_id, job_id=job_id,
            amount_micro=fields["estimate_micro"], day=day, month=month, actor=_actor(member), reason=None,
            at=now,
        )
        if enhance_reserve_micro is not None:
            set_enhance_reserve(c, job_id, enhance_reserve_micro)
        job = get_job(c, job_id)
        assert job is not None
        return job

    # ---- transitions ---------------------------------------------------------------------------

    async def next_to_submit(self, max_in_flight: int) -> list[JobRecord]:
        """Claim the jobs to submit now, in fair order (SPEC 3.6), in one transaction that first
        finishes the cancels whose taker never came back (counted like any other cancel)."""
        return await self._noted_tx(queue.take, max_in_flight, self.run_id, self.clock.now())

    async def set_image_uuids(self, job_id: int, image_uuids: dict[str, str]) -> None:
        await self.db.run(set_image_uuids, job_id, image_uuids)
        failpoints.hit("after_upload")

    async def begin_submit(self, job_id: int) -> bool:
        """Just before its submit goes out: True when the job may be sent, with ``submit_sent_at``
        written first (DB before the call). False when it must not be sent: finished meanwhile, or
        cancelled (then it is finished here: free if it was never sent, else cancel_sent)."""
        send = await self._noted_tx(self._begin_submit, job_id, self.clock.now())
        if send:
            failpoints.hit("before_submit")
        return send

    def _begin_submit(self, c: Conn, job_id: int, now: float, notes: list[JobFinished]) -> bool:
        return queue.open_send_window(c, job_id, now, notes, mark_sending)

    async def mark_submitted(self, job_id: int, next_poll_at: float) -> bool:
        """queued -> submitted (Runware acknowledged). False when the job was not queued (e.g.
        cancelled while its submit was out: it is polled as a cancelled job)."""
        failpoints.hit("submit_acknowledged")
        done = await self.db.run(mark_submitted, job_id, self.clock.now(), next_poll_at)
        if done:
            failpoints.hit("after_submit")
        return done

    async def unclaim(self, job_id: int) -> JobRecord | None:
        """Give a claimed queued job back to the queue (its submit failed for now). A cancel asked
        for while it was being submitted takes effect here: released if it was never sent, else
        cancelled with the reserve open (the failed submit may still have reached Runware)."""
        return await self._noted_tx(self._unclaim, job_id, self.clock.now())

    def _unclaim(self, c: Conn, job_id: int, now: float, notes: list[JobFinished]) -> JobRecord | None:
        job = get_job(c, job_id)
        if job is None or job.state != "queued":
            return job
        if job.cancel_requested:
            queue.cancel_waiting(c, job, job.cancelled_by or SYSTEM_ACTOR, now, notes)
        else:
            unclaim_job(c, job_id)
        return get_job(c, job_id)

    async def record_result(self, job_id: int, result: VideoResult) -> bool:
        """Store one variation; False if its videoUUID was already recorded (getResponse repeats)."""
        row = await self.db.run(
            insert_result, job_id=job_id, video_uuid=result.video_uuid, video_url=result.video_url,
            seed=result.seed, cost_micro=result.cost_micro, nsfw=result.nsfw, now=self.clock.now(),
        )
        if row is None:
            return False
        failpoints.hit("after_result_recorded")
        return True

    async def finish(
        self,
        job_id: int,
        state: str,
        error: str | None,
        cost_micro: int | None,
        failed_variations: int = 0,
    ) -> bool:
        """Final state plus settle or release, in one transaction, exactly once; a repeated call is a
        no-op answering False. Pass ``cost_micro=0`` when Runware is done and billed nothing.

        A job with ``cancel_requested`` ends as 'cancelled' whatever Runware said. On a job that
        may still be billed (timed out / cancelled after submit, cost not settled) this is the late
        answer: the cost settles, and a timed-out job whose videos came late becomes 'succeeded'
        with ``notified_at`` cleared, so its results are posted."""
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state!r}")
        done = await self._noted_tx(
            self._finish, job_id, state, error, cost_micro, failed_variations, self.clock.now()
        )
        if done:
            failpoints.hit("after_settle")
        return done

    def _finish(
        self, c: Conn, job_id: int, state: str, error: str | None, cost_micro: int | None,
        failed_variations: int, now: float, notes: list[JobFinished],
    ) -> bool:
        job = get_job(c, job_id)
        if job is None:
            return False
        if job.cancel_requested:
            state = "cancelled"
        reached: str | None = None  # the final state this call moved the job into (a job counts once)
        if job.is_final:
            if not _may_still_bill(job.state, job) or job_money(c, job_id).finalized:
                return False
            if cost_micro is None and state != "succeeded":
                return False  # e.g. a second time_out(): nothing new
            if job.state == "timed_out" and state == "succeeded":
                late_success(c, job_id, error, failed_variations)
        elif not finish_job(c, job_id, state, error, failed_variations, now):
            return False
        else:
            reached = state
        settled: int | None = None
        enhancement = enhancement_charge(job)  # settles with the videos, in the one settle row
        if cost_micro is None and state == "succeeded":
            # includeCost is always sent; if Runware still said nothing, the results' own costs or
            # else the estimate: a delivered video is never free by accident.
            count, total = results_cost(c, job_id)
            cost_micro = total if count and total else job.video_estimate_micro
        videos = cost_micro if cost_micro is not None and (state == "succeeded" or cost_micro > 0) else None
        if videos is None and cost_micro is None and _may_still_bill(state, job):
            pass  # the reserve stays open: a late cost, or expire() / close_late_window()
        elif videos is not None or enhancement:  # videos billed 0 still settle the enhancement
            reason = state if videos is not None else error or state
            if job_ledger(c, job, "settle", (videos or 0) + enhancement, reason, now) is not None:
                settled = (videos or 0) + enhancement
        else:
            job_ledger(c, job, "release", job.estimate_micro, error or state, now)
        if reached is not None or settled is not None:
            notes.append(JobFinished(job.model_key, reached, job.submitted_at, now, settled))
        return True

    async def abandon(self, job_id: int, error: str, *, told: bool = False) -> bool:
        """Failed before Runware took it (upload refused, submit rejected): failed, released. With
        ``told`` the member already heard it from the command's own reply, so in the same
        transaction the job counts as notified and no public notice follows."""
        done = await self._noted_tx(self._abandon, job_id, error, told, self.clock.now())
        if done:
            failpoints.hit("after_settle")
        return done

    def _abandon(self, c: Conn, job_id: int, error: str, told: bool, now: float, notes: list[JobFinished]) -> bool:
        done = self._finish(c, job_id, "failed", error, None, 0, now, notes)
        if done and told:
            mark_notified(c, job_id, now, None)
        return done

    async def time_out(self, job_id: int, error: str) -> bool:
        """Past the deadline: timed_out; the reserve stays open for a late cost."""
        return await self.finish(job_id, "timed_out", error, None)

    async def expire(self, job_id: int) -> bool:
        """Close one job's late window: the videos that came are settled at their reported cost
        (a timed-out job then becomes a partial success whose results are posted, naming the ones
        that never came); with none, the reserve is released. False if nothing was open."""
        return await self._noted_tx(self._expire, [job_id], self.clock.now()) == [job_id]

    def _expire(self, c: Conn, job_ids: list[int], now: float, notes: list[JobFinished]) -> list[int]:
        closed = []
        for job in get_jobs(c, job_ids):
            if not job.is_final or job_money(c, job.id).finalized:
                continue
            arrived, enhancement = results_for_job(c, job.id), enhancement_charge(job)
            if not arrived and not enhancement:
                job_ledger(c, job, "release", job.estimate_micro, "no cost reported", now)
                closed.append(job.id)
                continue
            # Runware billed what it made; a video whose cost it did not say counts at its share
            # of the estimate (never free by accident). The rest of the reserve goes back.
            share = job.video_estimate_micro // job.variations
            cost = sum(share if r.cost_micro is None else r.cost_micro for r in arrived) + enhancement
            missing = max(job.variations - len(arrived), 0)
            if job.state == "timed_out" and arrived:
                came = "1 video" if len(arrived) == 1 else f"{len(arrived)} videos"
                late_success(c, job.id, f"Only {came} of {job.variations} came: Runware did not finish "
                             f"the other {missing} in time, and they cost nothing.", missing)
            if job_ledger(c, job, "settle", cost, "late window closed", now) is not None:
                notes.append(JobFinished(job.model_key, None, job.submitted_at, now, cost))
            closed.append(job.id)
        return closed

    async def request_cancel(self, job_id: int, actor: str) -> JobRecord | None:
        """Queued and never sent: cancelled and released at once (``begin_submit`` then refuses to
        send it, in any process). Sent by this process, answer pending: ``cancel_requested``, and the
        submit's outcome decides. Sent by a process that is gone (or another one): cancel_sent.
        Submitted/processing: ``cancel_requested``; it keeps being polled to settle, and is never
        delivered. Final jobs are unchanged. Returns the job as it is now (None if there is none)."""
        return await self._noted_tx(self._request_cancel, job_id, actor, self.clock.now())

    def _request_cancel(
        self, c: Conn, job_id: int, actor: str, now: float, notes: list[JobFinished]
    ) -> JobRecord | None:
        job = get_job(c, job_id)
        if job is None or job.is_final:
            return job
        sending_here = job.claimed_by == self.run_id and (job.claimed_at or 0) >= now - queue.CLAIM_TTL_S
        if job.state == "queued" and not job.may_be_at_runware:
            queue.cancel_queued(c, job, actor, now, notes)
        elif job.state == "queued" and not sending_here:
            queue.cancel_sent(c, job, actor, now, notes)
        else:
            set_cancel_requested(c, job_id, actor)
        return get_job(c, job_id)

    async def mark_delivered(self, result_id: int, local_path: str | None = None) -> bool:
        done = await self.db.run(mark_delivered, result_id, self.clock.now(), local_path)
        if done:
            if self.metrics is not None and (facts := await self.db.run(delivered_result_facts, result_id)):
                self.metrics.video_delivered(*facts)
            failpoints.hit("after_delivery")
        return done

    async def mark_notified(self, job_id: int, result_message_id: int | None = None) -> bool:
        done = await self.db.run(mark_notified, job_id, self.clock.now(), result_message_id)
        if done:
            failpoints.hit("after_notify")
        return done

