"""Every moderator and operator action (SPEC 2.3, 3.3), without Discord: the /genadmin cog and the
operator CLI are two faces on this service.

    audit        the one transaction an action runs in (change + audit row), reading the trail
    limits       limit values: KEEP / UNLIMITED / DEFAULT or a number, their parsers and texts
    members      a member's and a role's limits, bans
    money        credits, refunds, the guild budget and its warnings
    guild        pause, generation channels, blocklist, moderator role, log channel, gallery, safety mode
    permissions  who may moderate, who may act on a job

Each action returns a ``Change`` (the audit row plus where to announce it). Targets are written
``user:<id>``, ``role:<id>``, ``channel:<id>``, ``job:<id>`` or ``term:<text>``; actors
``discord:<id>`` from Discord, whatever the CLI chooses otherwise.
"""

from bot.services.moderation.guild import GuildActions
from bot.services.moderation.members import MemberActions
from bot.services.moderation.money import MoneyActions


class Moderation(MemberActions, MoneyActions, GuildActions):
    """All the actions on one database: ``Moderation(db, cfg, clock)``."""


__all__ = ["Moderation"]
