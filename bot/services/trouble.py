"""What members and the operator are told while Runware misbehaves (SPEC 3.5): the progress note
from the first failed round, and an operator alert when Runware has failed for ``DOWN_ALERT_S`` or
``FAILED_IN_A_ROW`` jobs in a row failed, each repeated at most every ``ALERT_EVERY_S``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.services.clock import Clock

log = logging.getLogger(__name__)

NOT_ANSWERING = "Runware is not answering, retrying"
DOWN_ALERT_S = 300.0
FAILED_IN_A_ROW = 3
ALERT_EVERY_S = 3600.0
FAILED_STATES = frozenset({"failed", "timed_out"})

Alert = Callable[[str], Awaitable[None]]


class RunwareTrouble:
    def __init__(self, clock: Clock, alert: Alert) -> None:
        self.clock = clock
        self._alert = alert
        self.note: str | None = None            # shown on every progress message while set
        self.failing_since: float | None = None
        self.failed_in_a_row = 0
        self._alerted_at: dict[str, float] = {}

    async def request_failed(self, what: str) -> None:
        """A poll round or a submit that Runware did not answer (transport error, 429, 5xx)."""
        now = self.clock.now()
        self.note = NOT_ANSWERING
        if self.failing_since is None:
            self.failing_since = now
        down_for = now - self.failing_since
        if down_for >= DOWN_ALERT_S:
            await self._maybe_alert("down", f"Runware has not answered for {down_for / 60:.0f} minutes "
                                            f"(last: {what}). Jobs wait and resume by themselves.")

    def request_answered(self) -> None:
        self.note = None
        self.failing_since = None

    async def job_finished(self, state: str, error: str | None = None) -> None:
        if state not in FAILED_STATES:
            self.failed_in_a_row = 0
            return
        self.failed_in_a_row += 1
        if self.failed_in_a_row >= FAILED_IN_A_ROW:
            reason = (error or state).splitlines()[0] if (error or state) else state
            await self._maybe_alert("failures", f"{self.failed_in_a_row} jobs in a row failed at Runware "
                                                f"(last: {reason}).")

    async def _maybe_alert(self, kind: str, text: str) -> None:
        now = self.clock.now()
        last = self._alerted_at.get(kind)
        if last is not None and now - last < ALERT_EVERY_S:
            return
        self._alerted_at[kind] = now
        log.warning("operator alert: %s", text)
        try:
            await self._alert(text)
        except Exception:
            log.exception("could not alert the operator")
