"""What moderators see from /genadmin: replies, log-channel lines, and the embeds of quota show,
usage and audit. Pure functions of the service's records (no I/O, no clock)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import discord

from bot.db.records import AuditRecord
from bot.discordbot.limits import CONTENT_MAX, DESCRIPTION_MAX
from bot.discordbot.render_job import clip, discord_time
from bot.services.moderation.audit import Change
from bot.services.moderation.limits import limits_text
from bot.services.moderation.members import MemberReport
from bot.services.moderation.money import BudgetWarning
from bot.services.usage import UsageLine, UsageReport
from bot.usd import micro_to_usd

LINE_MAX = 400
TABLE_KEY_WIDTH = 20
COLOR_ADMIN = discord.Colour.dark_teal()

ACTION_LABELS = {
    "quota.set": "set the limits of", "quota.reset": "reset the limits of",
    "role_quota.set": "set the limits of role", "role_quota.clear": "cleared the limits of role",
    "credit": "credited", "refund": "refunded", "ban": "banned", "unban": "unbanned",
    "pause": "paused generation", "resume": "resumed generation",
    "channels.add": "added the generation channel", "channels.remove": "removed the generation channel",
    "blocklist.add": "blocked the term", "blocklist.remove": "unblocked the term",
    "budget.set": "set the monthly budget", "modrole.set": "set the moderator role",
    "logchannel.set": "set the log channel", "gallery.set": "set the gallery channel",
    "safety.mode": "set the content check",
    "usage.export": "exported usage",
}
# Actions whose before/after hold only ids and numbers (never member-written text): their
# ``user:1`` / ``role:1`` / ``channel:1`` tokens are shown as mentions.
_STRUCTURED = {"channels.add", "channels.remove", "modrole.set", "logchannel.set", "gallery.set", "refund"}
_LIMITS = {"quota.set", "quota.reset", "role_quota.set", "role_quota.clear"}  # shown as code
_REF = re.compile(r"\b(user|role|channel|job):(\d+)\b")
PERIOD_LABELS = {"today": "today", "7d": "in the last 7 days", "month": "this month", "all": "all time"}


def _ref(match: re.Match[str]) -> str:
    kind, ident = match.group(1), match.group(2)
    shown = {"user": f"<@{ident}>", "role": f"<@&{ident}>", "channel": f"<#{ident}>", "job": f"job #{ident}"}
    return shown[kind]


def count_text(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def refs(text: str) -> str:
    """``user:1`` -> <@1>, ``role:1`` -> <@&1>, ``channel:1`` -> <#1>, ``job:1`` -> job #1."""
    return _REF.sub(_ref, text)


def actor_text(actor: str) -> str:
    if actor.startswith("discord:") and actor[8:].isdigit():
        return f"<@{actor[8:]}>"
    return f"`{discord.utils.escape_markdown(actor)}`"


def target_text(target: str | None) -> str:
    if not target:
        return ""
    if target.startswith("term:"):
        return f"`{target[5:].replace('`', '')}`"
    return refs(target)


def _side(action: str, value: str | None) -> str:
    if value is None:
        return ""
    if action in _LIMITS:
        return f"`{value}`"
    return refs(value) if action in _STRUCTURED else discord.utils.escape_markdown(value)


def _change_text(action: str, target: str | None, before: str | None, after: str | None,
                 reason: str | None) -> str:
    label = ACTION_LABELS.get(action, action)
    text = f"{label} {target_text(target)}".rstrip()
    old, new = _side(action, before), _side(action, after)
    if old and new:
        text += f": {old} → {new}"
    elif new:
        text += f": {new}"
    if reason:
        text += f" (reason: {discord.utils.escape_markdown(reason)})"
    return text


def change_reply(change: Change) -> str:
    """The moderator's ephemeral confirmation."""
    text = _change_text(change.action, change.target, change.before, change.after, change.reason)
    where = " Posted in the log channel." if change.log_channel_id else ""
    return clip(f"✅ Done: {text}.{where} (audit #{change.audit_id})", CONTENT_MAX)


def log_line(change: Change) -> str:
    """The line posted in the guild's log channel."""
    text = _change_text(change.action, change.target, change.before, change.after, change.reason)
    return clip(f"🛡️ {actor_text(change.actor)} {text}", CONTENT_MAX)


def budget_warning_line(w: BudgetWarning) -> str:
    if w.level >= 100:
        head = "⛔ This server's monthly video budget is used up"
        tail = " New videos are refused until the month ends or the budget is raised (/genadmin budget set)."
    else:
        head = f"⚠️ This server has used {w.level}% of its monthly video budget"
        tail = ""
    return f"{head}: {micro_to_usd(w.spent_micro)} of {micro_to_usd(w.budget_micro)} spent this month.{tail}"


def channels_text(channel_ids: Sequence[int]) -> str:
    if not channel_ids:
        return "No generation channels are set: /video works in every channel."
    return "Generation channels: " + ", ".join(f"<#{c}>" for c in channel_ids)


def blocklist_text(terms: Sequence[str]) -> str:
    if not terms:
        return "The blocklist is empty."
    shown = ", ".join(f"`{t.replace('`', '')}`" for t in terms)
    return clip(f"Blocked terms ({len(terms)}): {shown}", CONTENT_MAX)


# ---- quota show ------------------------------------------------------------------------------

def _of(used: str, limit: str | None, left: str | None, unit: str) -> str:
    if limit is None:
        return f"{used} {unit} (no limit)"
    return f"{used} of {limit} {unit} ({left} left)"


def member_embed(report: MemberReport) -> discord.Embed:
    u = report.usage
    lim = u.limits
    embed = discord.Embed(title="Member limits", colour=COLOR_ADMIN,
                          description=f"<@{u.member.user_id}>")
    embed.add_field(name="Today", inline=False, value=_of(
        str(u.videos_today), None if lim.daily_videos is None else str(lim.daily_videos),
        str(u.remaining_videos), "videos") + f" · resets {discord_time(u.day_resets_at.timestamp())}")
    allowance = None if lim.monthly_micro is None else lim.monthly_micro + u.credit_month_micro
    month = _of(micro_to_usd(u.spent_month_micro), None if allowance is None else micro_to_usd(allowance),
                None if u.remaining_micro is None else micro_to_usd(u.remaining_micro), "spent")
    if u.credit_month_micro:
        month += f" · includes {micro_to_usd(u.credit_month_micro)} credit"
    embed.add_field(name="This month", inline=False, value=month)
    embed.add_field(name="At once", inline=False, value=_of(
        str(u.in_flight), None if lim.max_concurrent is None else str(lim.max_concurrent),
        str(u.remaining_concurrent), "jobs queued or running"))
    own = limits_text(report.override) if report.override else "none (role limits or the defaults apply)"
    embed.add_field(name="Own limits", inline=False, value=own)
    ban = report.ban
    embed.add_field(name="Ban", inline=False, value=(
        "not banned" if ban is None
        else f"banned {discord_time(ban.at)} by {actor_text(ban.actor)}"
             + (f": {discord.utils.escape_markdown(ban.reason)}" if ban.reason else "")))
    return embed


# ---- usage -----------------------------------------------------------------------------------

def _usage_lines(report: UsageReport) -> list[str]:
    if report.by == "user":
        return [f"<@{r.key}> · {count_text(r.jobs, 'job')} · {count_text(r.videos, 'video')} · "
                f"{micro_to_usd(r.settled_micro)} settled"
                f" · {micro_to_usd(r.refunded_micro)} refunded · {micro_to_usd(r.open_micro)} open"
                for r in report.rows]
    head = (f"{report.by:<{TABLE_KEY_WIDTH}} {'jobs':>5} {'videos':>6} {'settled':>10} {'refunded':>10} "
            f"{'open':>9}")
    return [head] + [_table_row(r) for r in report.rows]


def _table_row(r: UsageLine) -> str:
    return (f"{clip(r.key, TABLE_KEY_WIDTH):<{TABLE_KEY_WIDTH}} {r.jobs:>5} {r.videos:>6} "
            f"{micro_to_usd(r.settled_micro):>10} {micro_to_usd(r.refunded_micro):>10} "
            f"{micro_to_usd(r.open_micro):>9}")


def usage_embed(report: UsageReport) -> discord.Embed:
    """The table (cut to fit, the CSV has every row) and the totals."""
    period = PERIOD_LABELS.get(report.period, report.period)
    embed = discord.Embed(title=f"Usage {period}, by {report.by}", colour=COLOR_ADMIN)
    if not report.rows:
        embed.description = "No jobs in this period."
        return embed
    lines = _usage_lines(report)
    fence = report.by != "user"
    budget = DESCRIPTION_MAX - 120
    shown: list[str] = []
    for line in lines:
        if sum(len(s) + 1 for s in shown) + len(line) > budget:
            break
        shown.append(line)
    body = "\n".join(shown)
    if fence:
        body = f"```\n{body}\n```"
    rows_shown = len(shown) - (1 if fence else 0)
    if rows_shown < len(report.rows):
        body += f"\n… and {len(report.rows) - rows_shown} more rows in the CSV."
    embed.description = body
    t = report.total
    embed.add_field(name="Total", inline=False, value=(
        f"{count_text(t.jobs, 'job')} · {count_text(t.videos, 'video')} · "
        f"{micro_to_usd(t.settled_micro)} settled · {micro_to_usd(t.refunded_micro)} refunded · "
        f"{micro_to_usd(t.net_micro)} net · "
        f"{micro_to_usd(t.open_micro)} still reserved"))
    embed.set_footer(text=f"{report.filename}: USD with 6 decimals, one row per {report.by}")
    return embed


# ---- audit -----------------------------------------------------------------------------------

def audit_line(r: AuditRecord) -> str:
    text = _change_text(r.action, r.target, r.before, r.after, r.reason)
    return clip(f"`#{r.id}` {discord_time(r.at, 'f')} {actor_text(r.actor)} {text}", LINE_MAX)


def audit_embed(records: Sequence[AuditRecord]) -> discord.Embed:
    embed = discord.Embed(title="Moderator audit log (newest first)", colour=COLOR_ADMIN)
    if not records:
        embed.description = "No moderator actions yet."
        return embed
    lines: list[str] = []
    for r in records:
        line = audit_line(r)
        if sum(len(s) + 1 for s in lines) + len(line) > DESCRIPTION_MAX - 60:
            lines.append(f"… {len(records) - len(lines)} older rows not shown.")
            break
        lines.append(line)
    embed.description = "\n".join(lines)
    return embed
