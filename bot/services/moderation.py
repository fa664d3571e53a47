"""Every moderator and operator action (SPEC 2.3, 3.3), without Discord: the /genadmin cog and the
operator CLI are two faces on this service.

Each action validates, writes and appends its audit row (who, what, target, before, after, reason,
when) in ONE ``BEGIN IMMEDIATE`` transaction, so there is never a change without its audit row nor
an audit row for a change that did not happen. It returns a ``Change`` (the audit row plus where to
announce it). Targets are written ``user:<id>``, ``role:<id>``, ``channel:<id>``, ``job:<id>`` or
``term:<text>``; actors ``discord:<id>`` from Discord, whatever the CLI chooses otherwise.

Limit values: ``KEEP`` leaves a limit as it is, ``UNLIMITED`` lifts it, ``DEFAULT`` removes the
override (the roles' or the config's value applies again), an int sets it (micro-USD for money).
``parse_count_limit`` / ``parse_usd_limit`` / ``parse_usd_amount`` turn option text into these.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.config import Config, micro_to_usd
from bot.db import Conn, Database
from bot.db.audit import insert_audit, list_audit
from bot.db.guilds import (
    add_ban,
    delete_member_limits,
    delete_role_limits,
    get_ban,
    get_guild_settings,
    get_member_limits,
    guilds_with_log_channel,
    list_bans,
    list_member_limits,
    list_role_limits,
    remove_ban,
    role_limits_for,
    set_member_limits,
    set_role_limits,
)
from bot.db.jobs import get_job
from bot.db.money import insert_ledger, member_credit_month
from bot.db.records import AuditRecord, BanRecord, LimitOverride, MemberLimitRecord, RoleLimitRecord
from bot.errors import InvalidInput, UserFacingError
from bot.services.clock import Clock, day_of, month_of
from bot.services.moderation_guild import GuildActions
from bot.services.moderation_values import (
    AUDIT_MAX,
    DEFAULT,
    KEEP,
    MAX_USD_MICRO,
    UNLIMITED,
    BudgetWarning,
    Change,
    Diff,
    Limit,
    MemberReport,
    ban_text,
    clean_reason,
    limits_text,
    parse_count_limit,
    parse_usd_amount,
    parse_usd_limit,
    stored_limit,
)
from bot.services.quotas import Member, Quotas

__all__ = [
    "DEFAULT", "KEEP", "UNLIMITED", "BudgetWarning", "Change", "Limit", "MemberReport", "Moderation",
    "limits_text", "parse_count_limit", "parse_usd_amount", "parse_usd_limit",
]


class Moderation(GuildActions):
    def __init__(self, db: Database, cfg: Config, clock: Clock | None = None) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock or Clock()
        self.tz = cfg.progress.tz
        self.quotas = Quotas(db, cfg.limits, self.tz, self.clock)

    # ---- plumbing ------------------------------------------------------------------------------

    async def _act(self, fn: Callable[[Conn, int], Diff], guild_id: int, *, actor: str, reason: str | None,
                   amount: int | None = None) -> Change:
        """``fn(c, guild_id)`` validates and writes, returning (action, target, before, after); its
        audit row goes in the same transaction. Raising in ``fn`` rolls everything back."""
        now = self.clock.now()

        def tx(c: Conn) -> Change:
            action, target, before, after = fn(c, guild_id)
            audit_id = insert_audit(c, guild_id=guild_id, actor=actor, action=action, target=target,
                                      before=before, after=after, reason=reason, at=now)
            log_channel = get_guild_settings(c, guild_id).log_channel_id
            return Change(audit_id, guild_id, actor, action, target, before, after, reason, now, log_channel,
                          amount)

        return await self.db.run_tx(tx)

    # ---- limits --------------------------------------------------------------------------------

    async def set_member_limits(self, guild_id: int, user_id: int, *, daily_videos: Limit = KEEP,
                                monthly_micro: Limit = KEEP, max_concurrent: Limit = KEEP, actor: str,
                                reason: str | None = None) -> Change:
        values = self._limit_values(daily_videos, monthly_micro, max_concurrent)

        def change(c: Conn, gid: int) -> Diff:
            old = get_member_limits(c, gid, user_id)
            new = self._merged(old, values)
            if new == LimitOverride():
                delete_member_limits(c, gid, user_id)
            else:
                set_member_limits(c, gid, user_id, new)
            return "quota.set", f"user:{user_id}", limits_text(old), limits_text(new)

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def reset_member_limits(self, guild_id: int, user_id: int, *, actor: str,
                                  reason: str | None = None) -> Change:
        def change(c: Conn, gid: int) -> Diff:
            old = get_member_limits(c, gid, user_id)
            if old is None:
                raise UserFacingError("That member has no limits of their own to reset; "
                                      "the server's usual limits already apply.")
            delete_member_limits(c, gid, user_id)
            return "quota.reset", f"user:{user_id}", limits_text(old), limits_text(None)

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def show_member(self, member: Member) -> MemberReport:
        usage = await self.quotas.usage(member)

        def read(c: Conn) -> tuple[LimitOverride | None, BanRecord | None]:
            return (get_member_limits(c, member.guild_id, member.user_id),
                    get_ban(c, member.guild_id, member.user_id))

        override, ban = await self.db.run_read(read)
        return MemberReport(usage, override, ban)

    async def set_role_limits(self, guild_id: int, role_id: int, *, daily_videos: Limit = KEEP,
                              monthly_micro: Limit = KEEP, max_concurrent: Limit = KEEP, actor: str,
                              reason: str | None = None) -> Change:
        values = self._limit_values(daily_videos, monthly_micro, max_concurrent)

        def change(c: Conn, gid: int) -> Diff:
            old = next(iter(role_limits_for(c, gid, [role_id])), None)
            old_limits = old.limits if old else None
            new = self._merged(old_limits, values)
            if new == LimitOverride():
                delete_role_limits(c, gid, role_id)
            else:
                set_role_limits(c, gid, role_id, new)
            return "role_quota.set", f"role:{role_id}", limits_text(old_limits), limits_text(new)

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def clear_role_limits(self, guild_id: int, role_id: int, *, actor: str,
                                reason: str | None = None) -> Change:
        def change(c: Conn, gid: int) -> Diff:
            old = next(iter(role_limits_for(c, gid, [role_id])), None)
            if old is None:
                raise UserFacingError("That role has no limits set on this server.")
            delete_role_limits(c, gid, role_id)
            return "role_quota.clear", f"role:{role_id}", limits_text(old.limits), limits_text(None)

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def list_limits(self, guild_id: int) -> tuple[list[MemberLimitRecord], list[RoleLimitRecord]]:
        def read(c: Conn) -> tuple[list[MemberLimitRecord], list[RoleLimitRecord]]:
            return list_member_limits(c, guild_id), list_role_limits(c, guild_id)

        return await self.db.run_read(read)

    @staticmethod
    def _limit_values(daily: Limit, monthly: Limit, concurrent: Limit) -> dict[str, Limit]:
        values = {"daily_videos": daily, "monthly_micro": monthly, "max_concurrent": concurrent}
        if all(v is KEEP for v in values.values()):
            raise InvalidInput("limits", "nothing", "at least one of daily_videos, monthly_usd or "
                               "max_concurrent (a number, \"unlimited\" or \"default\")",
                               problem="no limit was given")
        for name, value in values.items():
            stored_limit(name, value, None)  # type errors and negatives before any write
        return values

    @staticmethod
    def _merged(old: LimitOverride | None, values: dict[str, Limit]) -> LimitOverride:
        old = old or LimitOverride()
        return LimitOverride(**{name: stored_limit(name, value, getattr(old, name))
                                for name, value in values.items()})

    # ---- money ---------------------------------------------------------------------------------

    async def credit(self, guild_id: int, user_id: int, amount_micro: int, *, actor: str,
                     reason: str) -> Change:
        """Add to (negative: take from) the member's monthly USD allowance for the current month."""
        if isinstance(amount_micro, bool) or not isinstance(amount_micro, int) or amount_micro == 0 \
                or abs(amount_micro) > MAX_USD_MICRO:
            raise InvalidInput("amount", amount_micro, "a non-zero amount in USD, e.g. 2.50 or -1.00")
        why = clean_reason(reason, required=True)
        now = self.clock.now()
        day, month = day_of(now, self.tz), month_of(now, self.tz)

        def change(c: Conn, gid: int) -> Diff:
            before = member_credit_month(c, gid, user_id, month)
            insert_ledger(c, kind="credit", guild_id=gid, user_id=user_id, job_id=None,
                            amount_micro=amount_micro, day=day, month=month, actor=actor,
                            reason=why, at=now)
            return ("credit", f"user:{user_id}", f"credit {month}: {micro_to_usd(before)}",
                    f"credit {month}: {micro_to_usd(before + amount_micro)}")

        return await self._act(change, guild_id, actor=actor, reason=why, amount=amount_micro)

    async def refund(self, job_id: int, *, actor: str, reason: str, guild_id: int | None = None) -> Change:
        """Give a settled job's cost back to its member's and guild's limits, once. ``guild_id``
        restricts it to that guild's jobs (a moderator's); the operator may pass None."""
        why = clean_reason(reason, required=True)
        now = self.clock.now()

        def tx(c: Conn) -> Change:
            job = get_job(c, job_id)
            if job is None or (guild_id is not None and job.guild_id != guild_id):
                raise UserFacingError(f"There is no job #{job_id} here.")
            amount = self.quotas.refund_in(c, job_id, actor, why or "", guild_id, now)
            before = f"settled {micro_to_usd(amount)} (user:{job.user_id})"
            after = f"refunded {micro_to_usd(amount)} to user:{job.user_id}"
            audit_id = insert_audit(c, guild_id=job.guild_id, actor=actor, action="refund",
                                      target=f"job:{job_id}", before=before, after=after, reason=why, at=now)
            log_channel = get_guild_settings(c, job.guild_id).log_channel_id
            return Change(audit_id, job.guild_id, actor, "refund", f"job:{job_id}", before, after, why, now,
                          log_channel, amount)

        return await self.db.run_tx(tx)

    # ---- access --------------------------------------------------------------------------------

    async def ban(self, guild_id: int, user_id: int, *, actor: str, reason: str) -> Change:
        why = clean_reason(reason, required=True)
        now = self.clock.now()

        def change(c: Conn, gid: int) -> Diff:
            old = get_ban(c, gid, user_id)
            add_ban(c, gid, user_id, why, actor, now)
            return "ban", f"user:{user_id}", ban_text(old), ban_text(get_ban(c, gid, user_id))

        return await self._act(change, guild_id, actor=actor, reason=why)

    async def unban(self, guild_id: int, user_id: int, *, actor: str, reason: str | None = None) -> Change:
        def change(c: Conn, gid: int) -> Diff:
            old = get_ban(c, gid, user_id)
            if old is None:
                raise UserFacingError("That member is not banned on this server.")
            remove_ban(c, gid, user_id)
            return "unban", f"user:{user_id}", ban_text(old), ban_text(None)

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def list_bans(self, guild_id: int) -> list[BanRecord]:
        return await self.db.run(list_bans, guild_id)

    # ---- reading the trail ---------------------------------------------------------------------

    async def audit(self, guild_id: int, count: int = 10) -> list[AuditRecord]:
        """The guild's latest audit rows, newest first."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= AUDIT_MAX:
            raise InvalidInput("count", count, f"a whole number from 1 to {AUDIT_MAX}")
        return await self.db.run(list_audit, guild_id, count)

    async def record(self, guild_id: int, action: str, *, actor: str, target: str | None = None,
                     after: str | None = None, reason: str | None = None) -> Change:
        """Audit an action that changes nothing (e.g. a usage export)."""
        def change(c: Conn, gid: int) -> Diff:
            return action, target, None, after

        return await self._act(change, guild_id, actor=actor, reason=reason)

    # ---- budget warnings -----------------------------------------------------------------------

    async def check_budget_warnings(self) -> list[BudgetWarning]:
        """For every guild with a log channel: a warning when its spend this month crossed 80% or
        100% of its budget and that level was not announced yet this month (recorded, so each level
        is said once a month). The caller posts them."""
        warnings = []
        for guild_id, channel_id in await self.db.run(guilds_with_log_channel):
            found = await self.quotas.budget_warning(guild_id)
            if found is not None:
                level, spent, budget = found
                warnings.append(BudgetWarning(guild_id, channel_id, level, spent, budget))
        return warnings
