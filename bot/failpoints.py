"""Crash-test failpoints (SPEC 3.1): KLINGBOT_FAILPOINT=<name> kills the process with SIGKILL when
it reaches that point. Inert when the variable is unset."""

from __future__ import annotations

import os
import signal

# One per transition; the crash suite iterates over this tuple.
NAMES = (
    "after_reserve",          # job row queued + reserve ledger row committed
    "after_upload",           # frames uploaded, imageUUIDs stored
    "before_submit",          # job claimed, submit_sent_at written, request not yet sent
    "submit_acknowledged",    # Runware acknowledged the task, 'submitted' not yet written
    "after_submit",           # Runware acknowledged, state 'submitted' written
    "after_result_recorded",  # a result row written, not yet delivered
    "after_settle",           # cost settled, results not yet delivered
    "after_delivery",         # a result marked delivered, final notice not posted
    "after_notify",           # notified_at written
)

# The prompt enhancer's window (only jobs with enhance reach them: not in the crash suite's NAMES).
ENHANCE_NAMES = (
    "enhance_sent",           # enhance_sent_at written, the promptEnhance call not yet made
    "enhance_answered",       # Runware answered with the enhanced prompt, not yet recorded
)

# Points inside the media worker process (bot.services.media_ops): they kill the worker, never the bot.
WORKER_NAMES = (
    "during_transcode",       # a fit has encoded a few frames
)


def hit(name: str) -> None:
    if os.environ.get("KLINGBOT_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
