"""Runware's prompt enhancer (SPEC 8): the rules in one place, pure functions of the job.

The submitter runs the enhancement before it builds the video task, with the submit window's
discipline: ``enhance_sent_at`` is written first, then Runware is called with a taskUUID derived
from the job's own, then the text and its cost are stored in one transaction. What Runware does
with a repeated promptEnhance taskUUID (answer again, bill again, or refuse it as a conflict) is not
documented, so the ledger never relies on it:

    The enhancement costs what Runware reported for it when it was answered by the first call that
    went out. When a call went out while an earlier one was still unanswered (the process was
    killed, or the answer was lost: a transport error or a 5xx), or when the job ends with a call
    still unanswered, it costs its reserve (``runware.enhance_reserve_usd``), or the reported cost if
    that is more: the reserve is the bound of what the unanswered calls may have billed.

A call Runware answered with a 4xx (the prompt refused, 429, the key or balance refused) billed
nothing, so it leaves nothing unanswered. The job's final cost is the videos' cost plus this, settled
once in the job's one settle row; a job whose videos cost nothing settles this alone (released only
when it is 0 as well).
"""

from __future__ import annotations

import uuid

from bot.db.records import JobRecord
from bot.requests import ResolvedRequest
from bot.runware.models import PromptEnhanceTask

# Fixed forever: an enhancement's taskUUID must come out the same in every process and release.
_NAMESPACE = uuid.UUID("3b0f8c7e-5f2a-4c1e-9a57-6d2f0e8b4a11")
MAX_TOKENS = 300  # promptMaxLength sent (12..400 tokens; ~100 tokens = 75 words): well under 2500 chars
VERSIONS = 1


def enhance_task_uuid(job_task_uuid: str) -> str:
    """The job's enhancement taskUUID: uuid5 of the job's taskUUID, stamped as version 4 (Runware
    asks for a UUID v4), so a re-run after a crash sends the very same one."""
    derived = uuid.uuid5(_NAMESPACE, job_task_uuid)
    return str(uuid.UUID(bytes=derived.bytes, version=4))


def enhance_task(job_task_uuid: str, prompt: str) -> PromptEnhanceTask:
    """The job's one promptEnhance task (the submitter sends it; `generate --dry-run` shows it)."""
    return PromptEnhanceTask(task_uuid=enhance_task_uuid(job_task_uuid), prompt=prompt, max_length=MAX_TOKENS,
                             versions=VERSIONS)


def enhancement_charge(job: JobRecord) -> int:
    """What the job's enhancement costs (micro-USD) if the job ended now; the module's rule."""
    if job.enhance_reserve_micro is None:
        return 0
    reported = job.enhance_cost_micro
    unanswered = job.enhance_sent_at is not None and job.enhanced_prompt is None
    if job.enhance_resent or unanswered or (job.enhanced_prompt is not None and reported is None):
        return max(job.enhance_reserve_micro, reported or 0)
    return reported or 0


def needs_enhancement(request: ResolvedRequest, job: JobRecord) -> bool:
    return request.enhance and job.enhanced_prompt is None


def made_request(job: JobRecord) -> ResolvedRequest:
    """The request as it was made: an enhanced job's prompt is the enhancer's text, and it is not
    enhanced again (Re-roll, Extend and Remix start from this)."""
    request = ResolvedRequest.model_validate(job.params)
    if job.enhanced_prompt is None or not request.enhance:
        return request
    return request.model_copy(update={
        "prompt": job.enhanced_prompt, "enhance": False, "enhance_reserve_micro": 0,
        "estimate_micro": request.estimate_micro - request.enhance_reserve_micro,
    })
