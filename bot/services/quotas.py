"""Quotas and money (SPEC 3.3). Balances are derived from the ledger. The checks that guard a
reservation (check_access, check_place, check_limits) are synchronous: they run in the database
thread inside the caller's ``BEGIN IMMEDIATE`` transaction (JobStore.create), so the counts they
read cannot change before the job and its reserve row are written."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo

from bot.config import LimitsConfig
from bot.config_premium import PREMIUM_UNLIMITED, PremiumConfig
from bot.db import Conn, Database
from bot.db.guilds import (
    get_ban,
    get_guild_settings,
    get_member_limits,
    list_blocklist,
    list_gen_channels,
    role_limits_for,
    update_guild_settings,
)
from bot.db.jobs import get_job
from bot.db.kv import kv_get, kv_set
from bot.db.money import guild_spent_month, insert_ledger, job_money, spend_numbers
from bot.db.records import UNLIMITED, LimitOverride
from bot.errors import InvalidInput, LimitExceeded, NotPermitted, RunwareUnavailable, UserFacingError
from bot.services.clock import (
    Clock,
    day_of,
    describe_reset,
    month_of,
    next_day_start,
    next_month_start,
)
from bot.usd import micro_to_usd

RUNWARE_PAUSED_MESSAGE = (
    "Video generation is paused for now: the bot's Runware account needs attention. "
    "The operator has been told; please try again later."
)
RUNWARE_PAUSE_KEY = "runware_pause"  # kv: the reason, while Runware refuses our key or balance
BUDGET_WARN_LEVELS = (80, 100)


# Where a job's quotas and usage count ("guild_id"): a Discord guild id, or one of these scopes.
TERMINAL_SCOPE = 0  # `klingbot generate` and the operator's own jobs
DM_SCOPE = -1  # /video in direct messages (discord.allow_dms): one scope of its own, limits per user


def scope_name(guild_id: int) -> str:
    if guild_id == TERMINAL_SCOPE:
        return "the terminal (guild 0)"
    if guild_id == DM_SCOPE:
        return "direct messages (guild dm)"
    return f"guild {guild_id}"


@dataclass(frozen=True)
class Member:
    guild_id: int  # a guild id, TERMINAL_SCOPE or DM_SCOPE
    user_id: int
    role_ids: tuple[int, ...] = ()
    # An active Discord entitlement to one of premium.sku_ids (worked out by the Discord layer from
    # the interaction): the [premium] limits apply where they are more generous.
    premium: bool = False


@dataclass(frozen=True)
class EffectiveLimits:
    """Limits that apply to one member after overrides. None = unlimited; money in micro-USD."""

    daily_videos: int | None
    monthly_micro: int | None
    max_concurrent: int | None
    guild_monthly_micro: int | None
    global_daily_micro: int | None


@dataclass(frozen=True)
class MemberUsage:
    """What /quota and ``klingbot quota show`` print."""

    member: Member
    limits: EffectiveLimits
    day: str
    month: str
    videos_today: int
    spent_month_micro: int  # counted spend (open reserves included) minus refunds
    pending_month_micro: int  # part of the above still reserved, not yet settled
    credit_month_micro: int
    in_flight: int
    remaining_videos: int | None  # None = unlimited
    remaining_micro: int | None
    remaining_concurrent: int | None
    guild_spent_month_micro: int
    day_resets_at: datetime
    month_resets_at: datetime


def _pick(default: int | None, member_value: int | None, role_values: list[int | None]) -> int | None:
    """A member override wins (even when stricter); else the most generous role; else the default."""
    if member_value is not None:
        return None if member_value == UNLIMITED else member_value
    set_values = [v for v in role_values if v is not None]
    if set_values:
        return None if UNLIMITED in set_values else max(set_values)
    return default


def _premium(normal: int | None, premium: int | str | None) -> int | None:
    """The more generous of what the member gets anyway and the [premium] value (None there:
    "default", keep it). Never less than before, so an override above premium keeps winning."""
    if premium is None:
        return normal
    if premium == PREMIUM_UNLIMITED or normal is None:
        return None
    assert isinstance(premium, int)
    return max(normal, premium)


def blocked_term(text: str, terms: Iterable[str]) -> str | None:
    """The first blocklist term found in ``text`` (case-insensitive, whole words; a ``*`` at either
    end of a term matches any word continuation there, as in Discord's AutoMod)."""
    for term in terms:
        core = term.strip().strip("*")
        if not core:
            continue
        left = "" if term.strip().startswith("*") else r"(?<!\w)"
        right = "" if term.strip().endswith("*") else r"(?!\w)"
        if re.search(left + re.escape(core) + right, text, re.IGNORECASE):
            return term
    return None


def _usd(micro: int) -> str:
    return micro_to_usd(micro)


class Quotas:
    def __init__(self, db: Database, limits: LimitsConfig, tz: tzinfo, clock: Clock,
                 premium: PremiumConfig | None = None) -> None:
        self.db = db
        self.limits = limits
        self.premium = premium or PremiumConfig()
        self.tz = tz
        self.clock = clock

    async def effective_limits(self, member: Member) -> EffectiveLimits:
        return await self.db.run(self.limits_in, member)

    def limits_in(self, c: Conn, member: Member) -> EffectiveLimits:
        own = get_member_limits(c, member.guild_id, member.user_id) or LimitOverride()
        roles = [r.limits for r in role_limits_for(c, member.guild_id, member.role_ids)]
        budget = get_guild_settings(c, member.guild_id).monthly_budget_micro
        if budget is None:
            guild_budget = self.limits.guild_monthly_micro_usd
        else:
            guild_budget = None if budget == UNLIMITED else budget
        limits = EffectiveLimits(
            daily_videos=_pick(self.limits.daily_videos, own.daily_videos, [r.daily_videos for r in roles]),
            monthly_micro=_pick(
                self.limits.monthly_micro_usd, own.monthly_micro, [r.monthly_micro for r in roles]
            ),
            max_concurrent=_pick(
                self.limits.max_concurrent, own.max_concurrent, [r.max_concurrent for r in roles]
            ),
            guild_monthly_micro=guild_budget,
            global_daily_micro=self.limits.global_daily_micro_usd,
        )
        if not member.premium:
            return limits
        # The member's own three limits only: the guild budget and the global ceiling bind everyone.
        p = self.premium
        return replace(
            limits,
            daily_videos=_premium(limits.daily_videos, p.daily_videos),
            monthly_micro=_premium(limits.monthly_micro, p.monthly_micro_usd),
            max_concurrent=_premium(limits.max_concurrent, p.max_concurrent),
        )

    async def usage(self, member: Member) -> MemberUsage:
        return await self.db.run_read(self._usage, member, self.clock.now())  # one snapshot

    def _usage(self, c: Conn, member: Member, now: float) -> MemberUsage:
        day, month = day_of(now, self.tz), month_of(now, self.tz)
        limits = self.limits_in(c, member)
        n = spend_numbers(c, member.guild_id, member.user_id, day, month)
        allowance = None if limits.monthly_micro is None else limits.monthly_micro + n.member_credit_month
        return MemberUsage(
            member=member,
            limits=limits,
            day=day,
            month=month,
            videos_today=n.videos_today,
            spent_month_micro=n.member_spent_month,
            pending_month_micro=n.member_pending_month,
            credit_month_micro=n.member_credit_month,
            in_flight=n.member_in_flight,
            remaining_videos=(
                None if limits.daily_videos is None else max(limits.daily_videos - n.videos_today, 0)
            ),
            remaining_micro=None if allowance is None else max(allowance - n.member_spent_month, 0),
            remaining_concurrent=(
                None if limits.max_concurrent is None else max(limits.max_concurrent - n.member_in_flight, 0)
            ),
            guild_spent_month_micro=n.guild_spent_month,
            day_resets_at=next_day_start(now, self.tz),
            month_resets_at=next_month_start(now, self.tz),
        )

    # ---- checks (synchronous: run inside the reserve transaction) -------------------------------

    def check_access(self, c: Conn, member: Member) -> None:
        """Ban, guild pause, bot-wide Runware pause, in that order."""
        ban = get_ban(c, member.guild_id, member.user_id)
        if ban is not None:
            why = f": {ban.reason}" if ban.reason else ""
            raise LimitExceeded("ban", f"You are banned from generating videos here{why}.")
        settings = get_guild_settings(c, member.guild_id)
        if settings.paused:
            why = f": {settings.pause_reason}" if settings.pause_reason else ""
            raise LimitExceeded("pause", f"Video generation is paused on this server{why}.")
        paused = kv_get(c, RUNWARE_PAUSE_KEY)
        if paused is not None:
            raise RunwareUnavailable(RUNWARE_PAUSED_MESSAGE)

    def check_place(self, c: Conn, member: Member, channel_id: int, blocklist_text: str | None) -> None:
        """Generation channels, then the blocklist (against prompt + negative prompt)."""
        if member.guild_id > 0:  # generation channels are a guild's setting
            channels = list_gen_channels(c, member.guild_id)
            if channels and channel_id not in channels:
                where = ", ".join(f"<#{ch}>" for ch in channels)
                raise NotPermitted(f"Videos can only be generated in {where} on this server.")
        if blocklist_text:
            term = blocked_term(blocklist_text, list_blocklist(c, member.guild_id))
            if term is not None:
                raise InvalidInput(
                    "prompt", blocklist_text, "a prompt without the terms this server blocks",
                    problem=f"contains {term!r}, which is blocked on this server",
                )

    def check_limits(
        self, c: Conn, member: Member, *, estimate_micro: int, variations: int, now: float
    ) -> None:
        """Daily videos, monthly USD, concurrency, guild budget, global ceiling, in that order.
        Raises LimitExceeded naming the limit, the numbers and when it resets."""
        day, month = day_of(now, self.tz), month_of(now, self.tz)
        lim = self.limits_in(c, member)
        n = spend_numbers(c, member.guild_id, member.user_id, day, month)
        day_reset, month_reset = next_day_start(now, self.tz), next_month_start(now, self.tz)
        est = _usd(estimate_micro)

        if lim.daily_videos is not None and n.videos_today + variations > lim.daily_videos:
            need = f"; this request needs {variations}" if variations > 1 else ""
            raise LimitExceeded(
                "daily_videos",
                f"Daily video limit reached: you have used {n.videos_today} of {lim.daily_videos} "
                f"videos today{need}. It resets {describe_reset(day_reset, now)}.",
                used=n.videos_today, allowed=lim.daily_videos, resets_at=day_reset,
            )
        if lim.monthly_micro is not None:
            allowance = lim.monthly_micro + n.member_credit_month
            if n.member_spent_month + estimate_micro > allowance:
                credit = f" (including {_usd(n.member_credit_month)} credit)" if n.member_credit_month else ""
                raise LimitExceeded(
                    "monthly_usd",
                    f"Monthly spending limit reached: you have used {_usd(n.member_spent_month)} of "
                    f"{_usd(allowance)}{credit} this month and this request costs about {est}. "
                    f"It resets {describe_reset(month_reset, now)}.",
                    used=n.member_spent_month, allowed=allowance, resets_at=month_reset,
                )
        if lim.max_concurrent is not None and n.member_in_flight + 1 > lim.max_concurrent:
            raise LimitExceeded(
                "max_concurrent",
                f"Too many jobs at once: you already have {n.member_in_flight} of {lim.max_concurrent} "
                "allowed jobs queued or running. Try again when one of them finishes.",
                used=n.member_in_flight, allowed=lim.max_concurrent,
            )
        guild_budget = lim.guild_monthly_micro
        if guild_budget is not None and n.guild_spent_month + estimate_micro > guild_budget:
            raise LimitExceeded(
                "guild_monthly_usd",
                f"This server's monthly video budget is used up: {_usd(n.guild_spent_month)} of "
                f"{_usd(guild_budget)} spent this month and this request costs about {est}. "
                f"It resets {describe_reset(month_reset, now)}.",
                used=n.guild_spent_month, allowed=guild_budget, resets_at=month_reset,
            )
        ceiling = lim.global_daily_micro
        if ceiling is not None and n.global_spent_day + estimate_micro > ceiling:
            raise LimitExceeded(
                "global_daily_usd",
                f"The bot's daily spending ceiling is reached: {_usd(n.global_spent_day)} of "
                f"{_usd(ceiling)} spent today across all servers and this request costs "
                f"about {est}. It resets {describe_reset(day_reset, now)}.",
                used=n.global_spent_day, allowed=ceiling, resets_at=day_reset,
            )

    # ---- moderator money operations -------------------------------------------------------------

    async def refund(self, job_id: int, actor: str, reason: str, *, guild_id: int | None = None) -> int:
        """Give a settled job's cost back to its member's and guild's limits, once. Returns the
        micro-USD refunded. ``guild_id`` restricts it to jobs of that guild (a moderator's own)."""
        return await self.db.run_tx(self.refund_in, job_id, actor, reason, guild_id, self.clock.now())

    def refund_in(self, c: Conn, job_id: int, actor: str, reason: str, guild_id: int | None, now: float) -> int:
        job = get_job(c, job_id)
        if job is None or (guild_id is not None and job.guild_id != guild_id):
            raise UserFacingError(f"There is no job #{job_id} here.")
        money = job_money(c, job_id)
        if money.refunded is not None:
            raise UserFacingError(f"Job #{job_id} was already refunded ({_usd(money.refunded)}).")
        if money.settled is None:
            raise UserFacingError(
                f"Job #{job_id} has no settled cost to refund (it is {job.state.replace('_', ' ')})."
            )
        if money.settled == 0:
            raise UserFacingError(f"Job #{job_id} cost nothing, so there is nothing to refund.")
        row = insert_ledger(
            c, kind="refund", guild_id=job.guild_id, user_id=job.user_id, job_id=job_id,
            amount_micro=money.settled, day=job.day, month=job.month, actor=actor, reason=reason, at=now,
        )
        if row is None:  # the unique index: someone else refunded it first
            raise UserFacingError(f"Job #{job_id} was already refunded.")
        return money.settled

    async def credit(self, member: Member, amount_micro: int, actor: str, reason: str) -> None:
        """Add to (negative: take from) the member's monthly allowance for the current month."""
        if amount_micro == 0:
            raise InvalidInput("amount", "0", "a non-zero amount in USD, e.g. 2.50 or -1.00")
        now = self.clock.now()
        await self.db.run(
            insert_ledger, kind="credit", guild_id=member.guild_id, user_id=member.user_id, job_id=None,
            amount_micro=amount_micro, day=day_of(now, self.tz), month=month_of(now, self.tz),
            actor=actor, reason=reason, at=now,
        )

    async def note_refusal(self, member: Member, exc: LimitExceeded) -> None:
        """A request refused by the guild's budget: the budget counts as used up this month, so the
        100% warning goes out even though reservations stop short of exactly 100%."""
        if exc.limit == "guild_monthly_usd":
            month = month_of(self.clock.now(), self.tz)
            await self.db.run(kv_set, budget_refused_key(member.guild_id), month)

    async def budget_warning(self, guild_id: int) -> tuple[int, int, int] | None:
        """(level %, spent, budget) when the guild's spend this month crossed 80% or 100% of its
        budget and that level was not announced yet this month; recorded so it is said once."""
        return await self.db.run_tx(self._budget_warning, guild_id, month_of(self.clock.now(), self.tz))

    def _budget_warning(self, c: Conn, guild_id: int, month: str) -> tuple[int, int, int] | None:
        budget = self.limits_in(c, Member(guild_id, 0)).guild_monthly_micro
        if not budget:
            return None
        spent = guild_spent_month(c, guild_id, month)
        exhausted = kv_get(c, budget_refused_key(guild_id)) == month
        reached = [lv for lv in BUDGET_WARN_LEVELS if spent * 100 >= budget * lv or (exhausted and lv == 100)]
        if not reached:
            return None
        settings = get_guild_settings(c, guild_id)
        done = settings.budget_warned_level if settings.budget_warned_month == month else 0
        if reached[-1] <= done:
            return None
        update_guild_settings(c, guild_id, budget_warned_month=month, budget_warned_level=reached[-1])
        return reached[-1], spent, budget


def budget_refused_key(guild_id: int) -> str:
    """kv key: the month in which a request was refused by this guild's budget."""
    return f"budget_refused:{guild_id}"
