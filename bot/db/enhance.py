"""SQL for the prompt enhancer's columns of a job (migration 009): the call written down before it
goes out, a 4xx answer that billed nothing, the answer stored. The money rule: bot/services/enhance.py."""

from __future__ import annotations

from bot.db.connection import Conn, query


@query
def set_enhance_reserve(c: Conn, job_id: int, reserve_micro: int) -> None:
    """The enhancement's share of the job's reserve, written in the reserve's own transaction."""
    c.execute("UPDATE jobs SET enhance_reserve_micro = ? WHERE id = ?", (reserve_micro, job_id))


@query
def mark_enhance_sending(c: Conn, job_id: int, now: float) -> bool:
    """Before the enhancement call goes out (DB first, as mark_sending): a call still unanswered from
    before (a killed process, a lost answer) makes this one a resend. False when the job is no longer
    a queued job without a cancel that still needs its enhancement."""
    rows = c.fetchall(
        """UPDATE jobs SET enhance_resent = CASE WHEN enhance_sent_at IS NULL THEN enhance_resent ELSE 1 END,
               enhance_sent_at = ?
           WHERE id = ? AND state = 'queued' AND cancel_requested = 0 AND enhanced_prompt IS NULL
               AND enhance_reserve_micro IS NOT NULL
           RETURNING id""",
        (now, job_id),
    )
    return bool(rows)


@query
def clear_enhance_sent(c: Conn, job_id: int) -> bool:
    """Runware answered the enhancement call with a 4xx: that call billed nothing. Only a queued job:
    one cancelled while the call was out has already settled it at its reserve."""
    rows = c.fetchall(
        "UPDATE jobs SET enhance_sent_at = NULL WHERE id = ? AND enhanced_prompt IS NULL AND state = 'queued'"
        " RETURNING id",
        (job_id,),
    )
    return bool(rows)


@query
def record_enhancement(c: Conn, job_id: int, text: str, cost_micro: int | None) -> bool:
    """The enhanced prompt and what Runware reported for it, in one write. False when the job is no
    longer queued (cancelled while the call was out: it ended with the call counted at its reserve)."""
    rows = c.fetchall(
        """UPDATE jobs SET enhanced_prompt = ?, enhance_cost_micro = ?
           WHERE id = ? AND state = 'queued' AND enhanced_prompt IS NULL AND enhance_sent_at IS NOT NULL
           RETURNING id""",
        (text, cost_micro, job_id),
    )
    return bool(rows)
