"""The prompt enhancer's transitions of the job state machine (JobStore's, kept apart for size):
the same rules as the submit window's (bot/services/jobs.py): the database first, then the call,
then the answer in one write. What the enhancement costs: bot/services/enhance.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from bot import failpoints
from bot.db import Conn, Database
from bot.db.enhance import clear_enhance_sent, mark_enhance_sending, record_enhancement
from bot.services import queue
from bot.services.clock import Clock
from bot.services.metrics import JobFinished, Metrics

T = TypeVar("T")


class EnhanceSteps:
    """JobStore's base: the metered transaction, and the enhancer's transitions."""

    # Provided by JobStore.
    db: Database
    clock: Clock
    metrics: Metrics | None

    async def _noted_tx(self, fn: Callable[..., T], *args: Any) -> T:
        """run_tx with a list as ``fn``'s last argument, where it notes the jobs it finished and the
        costs it settled; they reach the metrics once the transaction has committed."""
        notes: list[JobFinished] = []
        result = await self.db.run_tx(fn, *args, notes)
        if notes and self.metrics is not None:
            self.metrics.job_events(notes)
        return result

    def _finish(self, c: Conn, job_id: int, state: str, error: str | None, cost_micro: int | None,
                failed_variations: int, now: float, notes: list[JobFinished]) -> bool:
        raise NotImplementedError

    async def begin_enhance(self, job_id: int) -> bool:
        """Just before the enhancement call: True with ``enhance_sent_at`` written first (a resend
        noted when a call was still unanswered); False when it must not be made (as begin_submit)."""
        send = await self._noted_tx(self._begin_enhance, job_id, self.clock.now())
        if send:
            failpoints.hit("enhance_sent")
        return send

    def _begin_enhance(self, c: Conn, job_id: int, now: float, notes: list[JobFinished]) -> bool:
        return queue.open_send_window(c, job_id, now, notes, mark_enhance_sending)

    async def record_enhancement(self, job_id: int, text: str, cost_micro: int | None) -> bool:
        """The enhanced prompt and its cost, one write; False when the job was cancelled meanwhile."""
        failpoints.hit("enhance_answered")
        return await self.db.run(record_enhancement, job_id, text, cost_micro)

    async def enhance_not_billed(self, job_id: int) -> None:
        """Runware answered the call with a 4xx that is not the prompt's fault (429, 401, 402)."""
        await self.db.run(clear_enhance_sent, job_id)

    async def enhance_refused(self, job_id: int, error: str) -> bool:
        """The enhancer refused the prompt (that call billed nothing): failed, in one transaction."""
        done = await self._noted_tx(self._enhance_refused, job_id, error, self.clock.now())
        if done:
            failpoints.hit("after_settle")
        return done

    def _enhance_refused(self, c: Conn, job_id: int, error: str, now: float, notes: list[JobFinished]) -> bool:
        clear_enhance_sent(c, job_id)
        return self._finish(c, job_id, "failed", error, None, 0, now, notes)
