"""What every /genadmin subgroup shares: the console its commands go through (the run-time
moderator check, the services, the replies; AdminCog in admin.py) and the reason option."""

# No `from __future__ import annotations`: discord.py reads the callbacks' annotations at runtime.

from typing import TYPE_CHECKING

from discord import app_commands
from discord.app_commands import Range

from bot.services.moderation.audit import MAX_REASON

if TYPE_CHECKING:
    from bot.discordbot.cogs.admin import AdminCog

Reason = Range[str, 1, MAX_REASON]
WHY = "Why (goes to the audit log)"


class ConsoleGroup(app_commands.Group):
    """A /genadmin subgroup; ``parent`` is the root group it is added to."""

    def __init__(self, console: "AdminCog", parent: app_commands.Group) -> None:
        super().__init__(parent=parent)
        self.console = console
