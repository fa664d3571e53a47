"""Who may moderate and who may act on a job: the one place of the rule (SPEC 2.3). The faces
supply the facts (the Discord package reads Manage Server and the member's roles off the
interaction); the decision is made here."""

from __future__ import annotations

from bot.db.records import GuildSettings, JobRecord
from bot.services.quotas import DM_SCOPE, TERMINAL_SCOPE, Member


def is_moderator(member: Member, settings: GuildSettings, *, manages_guild: bool) -> bool:
    """Manage Server (or Administrator) where they are, or the guild's moderator role. Nobody
    moderates outside a guild (direct messages, the terminal)."""
    if member.guild_id in (TERMINAL_SCOPE, DM_SCOPE):
        return False
    if manages_guild:
        return True
    return settings.mod_role_id is not None and settings.mod_role_id in member.role_ids


def may_manage_job(job: JobRecord, member: Member, *, moderator: bool) -> bool:
    """Cancel, delete or look at a job: the member who started it, or a moderator."""
    return job.user_id == member.user_id or moderator
