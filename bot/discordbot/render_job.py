"""What members see: progress, result and failure messages, rendered from records.

Pure functions (no I/O, no clock): the same records always give the same text, so the sink can
compare renders and skip edits that would change nothing visible. Times that move on their own are
shown as Discord timestamps (``<t:...:R>``), which each client keeps current without an edit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

import discord

from bot.config import Config
from bot.db.records import JobRecord
from bot.discordbot.limits import CONTENT_MAX, DESCRIPTION_MAX, FIELD_MAX
from bot.services.sink import Outcome, ProgressUpdate, ResultFile
from bot.usd import micro_to_usd

BAR_WIDTH = 10
PROMPT_PREVIEW = 300

COLOR_QUEUED = discord.Colour.light_grey()
COLOR_RUNNING = discord.Colour.blurple()
COLOR_DONE = discord.Colour.green()
COLOR_FAILED = discord.Colour.red()
COLOR_WARN = discord.Colour.orange()


# ---- small formatting helpers ------------------------------------------------------------------

def model_label(cfg: Config, job: JobRecord) -> str:
    """The job's model as people know it ("Kling 2.5 Turbo Pro"); its key once it left the registry."""
    spec = cfg.models.get(job.model_key)
    return spec.label if spec else job.model_key


def discord_time(ts: float, style: str = "R") -> str:
    """A timestamp every Discord client renders in its own time zone (R = '3 minutes ago')."""
    return f"<t:{int(ts)}:{style}>"


def jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    where = guild_id if guild_id and guild_id > 0 else "@me"  # DMs (and the terminal's scope)
    return f"https://discord.com/channels/{where}/{channel_id}/{message_id}"


def fmt_seconds(seconds: float) -> str:
    """'42 s', '1 min 05 s', '1 h 02 min'."""
    total = int(round(max(seconds, 0.0)))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = max(0, min(width, int(fraction * width)))
    return "▰" * filled + "▱" * (width - filled)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


# What escape_markdown leaves alone but Discord still renders: a numbered list item ("1. "), and
# the <@id>, <@&id>, <#id>, <t:...>, </cmd:id> and <:emoji:id> tokens (a name, a date, an emoji).
_NUMBERED_ITEM = re.compile(r"^(\s*\d+)\.(?=\s)", re.MULTILINE)
_TOKEN = re.compile(r"<(?=(?:@[!&]?\d+|#\d+|t:-?\d+(?::\w)?|/[^<>\n]+:\d+|a?:\w+:\d+)>)")


def shown_prompt(prompt: str, limit: int) -> str:
    """The prompt exactly as typed, with Markdown escaped so it shows verbatim."""
    text = discord.utils.escape_markdown(prompt)
    text = _TOKEN.sub(r"\\<", _NUMBERED_ITEM.sub(r"\1\\.", text))
    return clip(text, limit)


def _param(job: JobRecord, name: str, default: Any = None) -> Any:
    return (job.params or {}).get(name, default)


def size_text(job: JobRecord) -> str:
    width, height, aspect = _param(job, "width"), _param(job, "height"), _param(job, "aspect")
    if width and height:
        return f"{width}×{height}" + (f" ({aspect})" if aspect else "")
    return str(aspect or "?")


def job_title(job: JobRecord, label: str) -> str:
    return f"Job #{job.id} · {label}"


def _spec_fields(embed: discord.Embed, job: JobRecord) -> None:
    embed.add_field(name="Size", value=size_text(job))
    embed.add_field(name="Duration", value=f"{job.duration_s} s")
    embed.add_field(name="Variations", value=str(job.variations))
    if is_loop(job):
        embed.add_field(name="Loop", value=LOOP_TEXT)


def job_prompt(job: JobRecord) -> str:
    """The prompt the video is made from: the enhancer's text once Runware rewrote it."""
    return job.enhanced_prompt or str(_param(job, "prompt", ""))


ENHANCED_FROM = "Enhanced from"
ENHANCING_LINE = "Runware's prompt enhancer rewrites the prompt first."


def add_enhanced_from(embed: discord.Embed, job: JobRecord) -> None:
    """An enhanced job's own prompt, as the member typed it."""
    if job.enhanced_prompt:
        embed.add_field(name=ENHANCED_FROM, value=shown_prompt(str(_param(job, "prompt", "")), FIELD_MAX),
                        inline=False)


def is_loop(job: JobRecord) -> bool:
    return bool(_param(job, "loop"))


LOOP_TEXT = "yes: ends on its first frame"
FITTING_LINE = "Fitting the video to Discord's size limit…"


# ---- progress ------------------------------------------------------------------------------------

def status_lines(update: ProgressUpdate) -> list[str]:
    job = update.job
    lines: list[str] = []
    if job.cancel_requested:
        lines.append("Cancelling…")
    elif update.phase == "fitting":
        lines.append(FITTING_LINE)
    elif update.phase == "queued":
        position = update.queue_position
        where = f"position {position} in the queue" if position else "waiting for a slot"
        lines.append(f"Queued: {where} (since {discord_time(job.created_at)})")
        if _param(job, "enhance") and not job.enhanced_prompt:
            lines.append(ENHANCING_LINE)
    else:
        started = job.submitted_at or job.created_at
        verb = "Sent to Runware" if update.phase == "submitted" else "Generating"
        lines.append(f"{verb}, started {discord_time(started)}")
        estimate = update.estimate_s
        if estimate and estimate > 0:
            fraction = update.elapsed_s / estimate
            if fraction < 1:
                step = int(fraction * BAR_WIDTH) / BAR_WIDTH
                usual = fmt_seconds(estimate)
                lines.append(f"`{progress_bar(step)}` about {int(step * 100)}% (usually takes {usual})")
            else:
                lines.append(f"`{progress_bar(1.0)}` taking longer than usual ({fmt_seconds(estimate)})")
    if update.note:
        lines.append(f"⚠️ {update.note}")
    return lines


def progress_embed(update: ProgressUpdate, label: str) -> discord.Embed:
    job = update.job
    colour = COLOR_QUEUED if update.phase == "queued" else COLOR_RUNNING
    if update.note:
        colour = COLOR_WARN
    prompt = shown_prompt(job_prompt(job), PROMPT_PREVIEW)
    original = shown_prompt(str(_param(job, "prompt", "")), PROMPT_PREVIEW) if job.enhanced_prompt else ""
    body = [f"for <@{job.user_id}>", f"> {prompt}" if prompt else "",
            f"{ENHANCED_FROM}: {original}" if original else "", "", *status_lines(update)]
    embed = discord.Embed(title=job_title(job, label), description="\n".join(body).strip(), colour=colour)
    _spec_fields(embed, job)
    embed.add_field(name="Reserved", value=micro_to_usd(job.estimate_micro))
    return embed


def render_key(embed: discord.Embed, content: str | None = None) -> str:
    """A comparable form of what a message shows (to skip edits that change nothing)."""
    return json.dumps([content, embed.to_dict()], sort_keys=True, default=str)


def finished_line(job: JobRecord, result_url: str | None) -> str:
    """The progress message's last text, once the final message is posted."""
    where = f": {result_url}" if result_url else "."
    if job.state == "succeeded":
        return f"✅ Job #{job.id} is finished{where}"
    if job.state == "timed_out":
        return f"⌛ Job #{job.id} timed out{where}"
    if job.state == "cancelled":
        return f"🚫 Job #{job.id} was cancelled{where}"
    return f"❌ Job #{job.id} failed{where}"


# ---- the final message -----------------------------------------------------------------------------

def mention(job: JobRecord) -> str:
    return f"<@{job.user_id}>"


def time_taken(job: JobRecord) -> float | None:
    if job.finished_at is None:
        return None
    return max(0.0, job.finished_at - (job.submitted_at or job.created_at))


def _cost_text(outcome: Outcome) -> str:
    if outcome.cost_micro is None:
        return f"{micro_to_usd(outcome.job.estimate_micro)} reserved (Runware has not reported the cost yet)"
    return micro_to_usd(outcome.cost_micro)


def link_line(index: int, file: ResultFile, cap: int | None = None) -> str:
    """A result that is not attached: its URL and when that URL stops working."""
    why = ""
    if file.size is not None:
        why = f" ({file.size / (1024 * 1024):.1f} MB"
        # Only a file the cap kept back is "over the limit" (after a 40005, smaller ones are links too).
        over_cap = cap is not None and file.size > cap
        why += f", over the {_mb(cap or 0)} upload limit" if over_cap else ""
        why += f"; it could not be fitted: {file.fit_error}" if file.fit_error else ""
        why += ")"
    url = file.result.video_url or "(no URL)"
    expiry = f", link expires {discord_time(file.expires_at)}" if file.expires_at else ""
    return f"Video {index}{why}: {url}{expiry}"


def fitted_line(index: int, file: ResultFile, cap: int) -> str:
    """An attached video that was transcoded to fit: the original stays reachable while it lasts."""
    converted = f", converted from {file.converted_from} to MP4" if file.converted_from else ""
    until = f" until {discord_time(file.expires_at, 'f')}" if file.expires_at else ""
    url = file.result.video_url or "(no URL)"
    return f"Video {index} is fitted to the {_mb(cap)} upload limit{converted}; full quality{until}: {url}"


def _mb(size: int) -> str:
    mb = size / (1024 * 1024)
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


def result_message(
    outcome: Outcome, label: str, *, attached: Collection[int], cap: int | None = None
) -> tuple[str, discord.Embed]:
    """Content (the mention and links to videos not attached) and the result embed.

    ``attached`` holds the ids of results whose files travel with the message."""
    job = outcome.job
    links = [
        link_line(i, f, cap) if f.result.id not in attached
        else fitted_line(i, f, cap or 0)
        for i, f in enumerate(outcome.files, start=1)
        if f.result.id not in attached or f.fitted is not None
    ]
    count = len(outcome.files)
    head = f"{mention(job)} your video is ready."
    if count > 1:
        head = f"{mention(job)} your {count} videos are ready."
    if count == 0:
        head = f"{mention(job)} job #{job.id} finished, but no video can be shown."
    content = clip("\n".join([head, *links]), CONTENT_MAX)

    embed = discord.Embed(
        title=job_title(job, label),
        description=shown_prompt(job_prompt(job), DESCRIPTION_MAX - 100),
        colour=COLOR_DONE if count else COLOR_WARN,
    )
    add_enhanced_from(embed, job)
    _spec_fields(embed, job)
    seeds = [str(f.result.seed) for f in outcome.files if f.result.seed is not None]
    embed.add_field(name="Seeds" if len(seeds) != 1 else "Seed", value=", ".join(seeds) or "n/a")
    embed.add_field(name="Cost", value=_cost_text(outcome))
    taken = time_taken(job)
    embed.add_field(name="Time taken", value=fmt_seconds(taken) if taken is not None else "n/a")
    extends = _param(job, "extends_job_id")
    if extends:
        embed.add_field(name="Extends", value=f"job #{extends}, video {_param(job, 'extends_video', 1)}")
    notes = notes_lines(outcome)
    if notes:
        embed.add_field(name="Not delivered", value=clip("\n".join(notes), 1024), inline=False)
    return content, embed


def notes_lines(outcome: Outcome) -> list[str]:
    lines = [f"• {line}" for line in outcome.failures]
    if outcome.flagged:
        what = "1 video was" if outcome.flagged == 1 else f"{outcome.flagged} videos were"
        lines.append(f"• {what} withheld by the content check (its cost still counts).")
    return lines


def failure_message(outcome: Outcome, label: str) -> tuple[str, discord.Embed]:
    """A failed, timed-out or cancelled job: a new message that mentions the member."""
    job = outcome.job
    if job.state == "timed_out":
        title, lead = f"Job #{job.id} timed out", "Runware did not finish this video in time."
    elif job.state == "cancelled":
        title, lead = f"Job #{job.id} was cancelled", "This job was cancelled."
    else:
        title, lead = f"Job #{job.id} failed", "This video could not be made."
    reasons = [line for line in outcome.failures if line] or ([job.error] if job.error else [])
    if outcome.cost_micro:
        money = f"Runware billed {micro_to_usd(outcome.cost_micro)} for it."
    elif outcome.cost_micro is None and job.state == "timed_out":
        money = "If Runware reports a cost later, it is settled then; otherwise you are not charged."
    else:
        money = "You were not charged."
    body = [lead, *(f"• {clip(r, 500)}" for r in reasons), "", money, "",
            f"> {shown_prompt(job_prompt(job), PROMPT_PREVIEW)}"]
    embed = discord.Embed(title=f"{title} · {label}", description="\n".join(body), colour=COLOR_FAILED)
    add_enhanced_from(embed, job)
    _spec_fields(embed, job)
    return f"{mention(job)} job #{job.id} did not produce a video.", embed


# ---- replies ----------------------------------------------------------------------------------------

def queued_reply(job: JobRecord, *, progress_url: str | None, position: int | None = None) -> str:
    """The ephemeral answer to /video once the job is reserved and queued."""
    where = f"Progress: {progress_url}" if progress_url else f"Progress will appear in <#{job.channel_id}>."
    queue = f" (position {position} in the queue)" if position and position > 1 else ""
    return (
        f"Queued as job #{job.id}{queue}. {where}\n"
        f"Reserved {micro_to_usd(job.estimate_micro)} of your quota; "
        "the cost settles to what Runware reports."
    )


def refused_post_alert(job: JobRecord, times: int, code: int, by_dm: bool) -> str:
    """For the ops channel: a job's result that a channel kept refusing (400)."""
    where = "by DM" if by_dm else "nowhere: the member takes no DMs either"
    return (f"Discord refused job #{job.id}'s result in <#{job.channel_id}> {times} times (400, code {code}); "
            f"it was delivered {where}.")


def lost_permission_dm(job: JobRecord) -> str:
    return (
        f"I can no longer post in <#{job.channel_id}>, so updates on your job #{job.id} come here. "
        "The job itself goes on."
    )
