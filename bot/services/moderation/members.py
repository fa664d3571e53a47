"""Actions on members and roles: their own limits (quota set/reset/show), role limits, and bans."""

from __future__ import annotations

from dataclasses import dataclass

from bot.db import Conn
from bot.db.guilds import (
    add_ban,
    delete_member_limits,
    delete_role_limits,
    get_ban,
    get_member_limits,
    list_bans,
    list_member_limits,
    list_role_limits,
    remove_ban,
    role_limits_for,
    set_member_limits,
    set_role_limits,
)
from bot.db.records import BanRecord, LimitOverride, MemberLimitRecord, RoleLimitRecord
from bot.errors import InvalidInput, UserFacingError
from bot.services.moderation.audit import AuditedActions, Change, Diff, clean_reason
from bot.services.moderation.limits import KEEP, Limit, limits_text, stored_limit
from bot.services.quotas import Member, MemberUsage


@dataclass(frozen=True)
class MemberReport:
    """quota show: the member's numbers, their own override and their ban."""

    usage: MemberUsage
    override: LimitOverride | None
    ban: BanRecord | None


def ban_text(ban: BanRecord | None) -> str:
    if ban is None:
        return "not banned"
    return f"banned: {ban.reason}" if ban.reason else "banned"


def _limit_values(daily: Limit, monthly: Limit, concurrent: Limit) -> dict[str, Limit]:
    values = {"daily_videos": daily, "monthly_micro": monthly, "max_concurrent": concurrent}
    if all(v is KEEP for v in values.values()):
        raise InvalidInput("limits", "nothing", "at least one of daily_videos, monthly_usd or "
                           "max_concurrent (a number, \"unlimited\" or \"default\")",
                           problem="no limit was given")
    for name, value in values.items():
        stored_limit(name, value, None)  # type errors and negatives before any write
    return values


def _merged(old: LimitOverride | None, values: dict[str, Limit]) -> LimitOverride:
    old = old or LimitOverride()
    return LimitOverride(**{name: stored_limit(name, value, getattr(old, name)) for name, value in values.items()})


class MemberActions(AuditedActions):
    # ---- a member's own limits -------------------------------------------------------------------

    async def set_member_limits(self, guild_id: int, user_id: int, *, daily_videos: Limit = KEEP,
                                monthly_micro: Limit = KEEP, max_concurrent: Limit = KEEP, actor: str,
                                reason: str | None = None) -> Change:
        values = _limit_values(daily_videos, monthly_micro, max_concurrent)

        def change(c: Conn, gid: int) -> Diff:
            old = get_member_limits(c, gid, user_id)
            new = _merged(old, values)
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

    # ---- role limits -----------------------------------------------------------------------------

    async def set_role_limits(self, guild_id: int, role_id: int, *, daily_videos: Limit = KEEP,
                              monthly_micro: Limit = KEEP, max_concurrent: Limit = KEEP, actor: str,
                              reason: str | None = None) -> Change:
        values = _limit_values(daily_videos, monthly_micro, max_concurrent)

        def change(c: Conn, gid: int) -> Diff:
            old = next(iter(role_limits_for(c, gid, [role_id])), None)
            old_limits = old.limits if old else None
            new = _merged(old_limits, values)
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

    # ---- bans ------------------------------------------------------------------------------------

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
