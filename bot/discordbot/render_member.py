"""What members see for their own jobs and limits: the Details embed, /quota, /history and /job.

Pure functions of records (no I/O; the current time is passed in where it matters), like
bot/views.py, whose helpers they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import discord

from bot.db.records import ACTIVE_STATES, JobMoney, JobRecord, ResultRecord
from bot.discordbot.limits import CONTENT_MAX, DESCRIPTION_MAX, FIELD_MAX
from bot.discordbot.render_job import (
    COLOR_DONE,
    COLOR_FAILED,
    COLOR_QUEUED,
    COLOR_RUNNING,
    LOOP_TEXT,
    add_enhanced_from,
    clip,
    discord_time,
    fmt_seconds,
    is_loop,
    job_prompt,
    shown_prompt,
    size_text,
    time_taken,
)
from bot.services.quotas import MemberUsage
from bot.usd import micro_to_usd

SNIPPET = 60
HISTORY_MAX = 25
# How a job came from its parent (the request's origin); older jobs have none: they were re-rolls.
PARENT_LABELS = {"reroll": "Re-roll of", "extend": "Extension of", "remix": "Remix of"}


def _param(job: JobRecord, name: str, default: Any = None) -> Any:
    return (job.params or {}).get(name, default)


def state_text(job: JobRecord) -> str:
    text = job.state.replace("_", " ")
    if job.cancel_requested and job.state in ACTIVE_STATES:
        text += " (cancelling)"
    return text


def state_colour(job: JobRecord) -> discord.Colour:
    if job.state == "succeeded":
        return COLOR_DONE
    if job.state == "queued":
        return COLOR_QUEUED
    if job.state in ACTIVE_STATES:
        return COLOR_RUNNING
    return COLOR_FAILED


def cost_text(money: JobMoney) -> str:
    """One job's money in words: settled, released (free), or still reserved."""
    if money.settled is not None:
        text = micro_to_usd(money.settled)
        if money.refunded:
            text += f" (refunded {micro_to_usd(money.refunded)})"
        return text
    if money.released is not None:
        return "free (released)"
    return f"{micro_to_usd(money.reserved)} reserved"


def _when(ts: float | None) -> str:
    return f"{discord_time(ts, 'f')} ({discord_time(ts)})" if ts else "not yet"


# ---- Details (button) ----------------------------------------------------------------------------

def details_embed(
    job: JobRecord, results: Sequence[ResultRecord], money: JobMoney, label: str
) -> discord.Embed:
    """Every parameter, the seeds, the taskUUID, the money and the timings of one job."""
    embed = discord.Embed(
        title=f"Job #{job.id} · details",
        description=shown_prompt(job_prompt(job), DESCRIPTION_MAX - 200),
        colour=state_colour(job),
    )
    add_enhanced_from(embed, job)
    model_id = _param(job, "model_id")
    embed.add_field(name="Model", value=f"{label} (`{model_id}`)" if model_id else label)
    embed.add_field(name="Size", value=size_text(job))
    embed.add_field(name="Duration", value=f"{job.duration_s} s")
    embed.add_field(name="Variations", value=str(job.variations))
    cfg = _param(job, "cfg_scale")
    embed.add_field(name="CFG scale", value="default" if cfg is None else f"{cfg:g}")
    embed.add_field(name="Format", value=str(_param(job, "output_format", "MP4")))
    quality = _param(job, "quality")
    embed.add_field(name="Quality", value="default" if quality is None else str(quality))
    first, last = bool(_param(job, "has_first_frame")), bool(_param(job, "has_last_frame"))
    loop = is_loop(job)
    last_text = "the first (loop)" if loop else "yes" if last else "no"
    embed.add_field(name="Frames", value=f"first: {'yes' if first else 'no'}, last: {last_text}")
    embed.add_field(name="Loop", value=LOOP_TEXT if loop else "no")
    if _param(job, "enhance"):
        cost = "" if job.enhance_cost_micro is None else f", cost {micro_to_usd(job.enhance_cost_micro)}"
        done = "prompt rewritten" if job.enhanced_prompt else "not done"
        embed.add_field(name="Prompt enhancer", value=f"{done}{cost}")
    negative = _param(job, "negative_prompt")
    embed.add_field(name="Negative prompt", value=shown_prompt(negative, FIELD_MAX) if negative else "none",
                    inline=False)
    seeds = [str(r.seed) for r in results if r.seed is not None]
    embed.add_field(name="Seeds", value=clip(", ".join(seeds), FIELD_MAX) if seeds else "none yet")
    embed.add_field(name="Task UUID", value=f"`{job.task_uuid}`", inline=False)
    embed.add_field(name="Reserved", value=micro_to_usd(money.reserved))
    if money.settled is not None:
        settled = micro_to_usd(money.settled)
    elif money.released is not None:
        settled = "nothing (released)"
    else:
        settled = "not yet"
    embed.add_field(name="Settled cost", value=settled)
    if money.refunded:
        embed.add_field(name="Refunded", value=micro_to_usd(money.refunded))
    state = state_text(job)
    if job.error:
        state += f"\n{clip(job.error, 500)}"
    embed.add_field(name="State", value=state, inline=False)
    embed.add_field(name="Created", value=_when(job.created_at))
    embed.add_field(name="Submitted", value=_when(job.submitted_at))
    embed.add_field(name="Finished", value=_when(job.finished_at))
    taken = time_taken(job)
    if taken is not None:
        embed.add_field(name="Time taken", value=fmt_seconds(taken))
    if job.parent_job_id:
        embed.add_field(name=PARENT_LABELS.get(_param(job, "origin"), "Re-roll of"),
                        value=f"job #{job.parent_job_id}")
    return embed


# ---- /quota --------------------------------------------------------------------------------------

def _reset(at: Any) -> str:
    ts = at.timestamp()
    return f"resets {discord_time(ts, 'f')} ({discord_time(ts)})"


def quota_embed(usage: MemberUsage, in_flight: Sequence[JobRecord] = ()) -> discord.Embed:
    lim = usage.limits
    embed = discord.Embed(title="Your video quota", colour=COLOR_RUNNING)
    if usage.member.premium:
        embed.title = "Your video quota · Premium"
        embed.description = "**Premium**: your subscription raises your limits; these are your premium limits."
    if lim.daily_videos is None:
        today = f"{usage.videos_today} used · unlimited"
    else:
        today = f"**{usage.remaining_videos}** of {lim.daily_videos} left ({usage.videos_today} used)"
    embed.add_field(name="Videos today", value=f"{today}\n{_reset(usage.day_resets_at)}", inline=False)
    spent = micro_to_usd(usage.spent_month_micro)
    if lim.monthly_micro is None:
        month = f"{spent} used · unlimited"
    else:
        allowance = lim.monthly_micro + usage.credit_month_micro
        left = micro_to_usd(usage.remaining_micro or 0)
        month = f"**{left}** of {micro_to_usd(allowance)} left ({spent} used)"
        if usage.credit_month_micro:
            month += f"\nincludes {micro_to_usd(usage.credit_month_micro)} credit"
    if usage.pending_month_micro:
        month += f"\n{micro_to_usd(usage.pending_month_micro)} of it is reserved for jobs not settled yet"
    embed.add_field(name="Spending this month", value=f"{month}\n{_reset(usage.month_resets_at)}",
                    inline=False)
    running = str(usage.in_flight)
    if lim.max_concurrent is not None:
        running += f" of {lim.max_concurrent} at once"
    if in_flight:
        ids = ", ".join(f"#{j.id} ({state_text(j)})" for j in in_flight)
        running += f"\n{clip(ids, 900)}"
    embed.add_field(name="Jobs in flight", value=running, inline=False)
    return embed


# ---- /history ------------------------------------------------------------------------------------

def history_line(job: JobRecord, money: JobMoney) -> str:
    prompt = shown_prompt(" ".join(job_prompt(job).split()), SNIPPET)
    when = discord_time(job.created_at)
    return f"**#{job.id}** · {state_text(job)} · {cost_text(money)} · {when} · {prompt}"


def history_embed(jobs: Sequence[tuple[JobRecord, JobMoney]]) -> discord.Embed:
    if not jobs:
        return discord.Embed(title="Your recent jobs", description="You have no jobs here yet.",
                             colour=COLOR_QUEUED)
    lines: list[str] = []
    size = 0
    for job, money in jobs[:HISTORY_MAX]:
        line = history_line(job, money)
        if size + len(line) + 1 > DESCRIPTION_MAX - 50:
            lines.append("…")
            break
        lines.append(line)
        size += len(line) + 1
    embed = discord.Embed(title="Your recent jobs", description="\n".join(lines), colour=COLOR_RUNNING)
    embed.set_footer(text="/job id shows one of them again")
    return embed


# ---- /job ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RepostItem:
    """One variation of a re-posted job: attached (``attached``), or linked (maybe expired)."""

    result: ResultRecord
    attached: bool
    expires_at: float


def link_expired(item: RepostItem, now: float) -> bool:
    return now > item.expires_at


def repost_lines(items: Sequence[RepostItem], now: float) -> list[str]:
    lines = []
    for index, item in enumerate(items, start=1):
        if item.attached:
            continue
        if item.result.nsfw:
            lines.append(f"Video {index}: withheld by the content check.")
        elif link_expired(item, now) or not item.result.video_url:
            lines.append(f"Video {index}: the link has expired ({discord_time(item.expires_at)}) and "
                         "the file is no longer kept by the bot.")
        else:
            expires = discord_time(item.expires_at)
            lines.append(f"Video {index}: {item.result.video_url} (link expires {expires})")
    return lines


def job_message(
    job: JobRecord,
    money: JobMoney,
    label: str,
    items: Sequence[RepostItem],
    *,
    now: float,
) -> tuple[str, discord.Embed]:
    """/job: the job's summary and, for a finished job, its videos (attached ones travel as files)."""
    embed = discord.Embed(
        title=f"Job #{job.id} · {label}",
        description=shown_prompt(job_prompt(job), DESCRIPTION_MAX - 200),
        colour=state_colour(job),
    )
    add_enhanced_from(embed, job)
    embed.add_field(name="By", value=f"<@{job.user_id}>")
    embed.add_field(name="State", value=state_text(job))
    embed.add_field(name="Cost", value=cost_text(money))
    embed.add_field(name="Size", value=size_text(job))
    embed.add_field(name="Duration", value=f"{job.duration_s} s")
    embed.add_field(name="Variations", value=str(job.variations))
    if is_loop(job):
        embed.add_field(name="Loop", value=LOOP_TEXT)
    embed.add_field(name="Created", value=discord_time(job.created_at, "f"))
    seeds = [str(i.result.seed) for i in items if i.result.seed is not None]
    if seeds:
        embed.add_field(name="Seeds", value=clip(", ".join(seeds), FIELD_MAX))
    if job.error:
        embed.add_field(name="Notes", value=clip(job.error, FIELD_MAX), inline=False)
    lines = repost_lines(items, now)
    attached = sum(1 for i in items if i.attached)
    if job.state == "succeeded":
        head = f"Job #{job.id}: " + (f"{attached} video(s) attached." if attached else "videos below.")
        if not items:
            head = f"Job #{job.id} finished, but it has no video to show."
    elif job.state in ACTIVE_STATES:
        head = f"Job #{job.id} is still {state_text(job)}; its videos are posted when it finishes."
    else:
        head = f"Job #{job.id} {state_text(job)}: there is no video to show."
    content = clip("\n".join([head, *lines]), CONTENT_MAX)
    return content, embed
