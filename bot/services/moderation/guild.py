"""Guild-wide actions: pause, generation channels, blocklist, moderator role, log channel, gallery,
safety mode, and the settings they make up."""

from __future__ import annotations

from bot.config import SAFETY_MODES
from bot.db import Conn
from bot.db.guilds import (
    add_blocklist_term,
    add_gen_channel,
    get_guild_settings,
    list_blocklist,
    list_gen_channels,
    remove_blocklist_term,
    remove_gen_channel,
    update_guild_settings,
)
from bot.db.records import GuildSettings
from bot.errors import InvalidInput, UserFacingError
from bot.services.moderation.audit import AuditedActions, Change, Diff, clean_reason
from bot.usd import micro_to_usd, usd_to_micro

MAX_TERM = 100
SAFETY_STRENGTH = {mode: rank for rank, mode in enumerate(SAFETY_MODES)}  # none < fast < full


def blocked_term_text(term: str) -> str:
    """A blocklist term as stored: whitespace collapsed, 1 to MAX_TERM characters."""
    text = " ".join((term or "").split())
    if not text.strip("*") or len(text) > MAX_TERM:
        raise InvalidInput("term", term, f"a word or phrase of 1 to {MAX_TERM} characters "
                           "(a * at either end matches any continuation)")
    return text


def pause_text(s: GuildSettings) -> str:
    if not s.paused:
        return "running"
    return f"paused: {s.pause_reason}" if s.pause_reason else "paused"


def terms_text(count: int) -> str:
    return "1 term" if count == 1 else f"{count} terms"


def ids_text(kind: str, ids: list[int], empty: str) -> str:
    return " ".join(f"{kind}:{i}" for i in ids) if ids else empty


class GuildActions(AuditedActions):
    # ---- pause ---------------------------------------------------------------------------------

    async def pause(self, guild_id: int, *, actor: str, reason: str | None = None) -> Change:
        why = clean_reason(reason)

        def change(c: Conn, gid: int) -> Diff:
            old = get_guild_settings(c, gid)
            new = update_guild_settings(c, gid, paused=True, pause_reason=why)
            return "pause", None, pause_text(old), pause_text(new)

        return await self._act(change, guild_id, actor=actor, reason=why)

    async def resume(self, guild_id: int, *, actor: str, reason: str | None = None) -> Change:
        def change(c: Conn, gid: int) -> Diff:
            old = get_guild_settings(c, gid)
            if not old.paused:
                raise UserFacingError("Video generation is not paused on this server.")
            new = update_guild_settings(c, gid, paused=False, pause_reason=None)
            return "resume", None, pause_text(old), pause_text(new)

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    # ---- channels and blocklist ----------------------------------------------------------------

    async def add_channel(self, guild_id: int, channel_id: int, *, actor: str, reason: str | None = None
                          ) -> Change:
        def change(c: Conn, gid: int) -> Diff:
            before = list_gen_channels(c, gid)
            if not add_gen_channel(c, gid, channel_id):
                raise UserFacingError("That channel is already a generation channel.")
            return ("channels.add", f"channel:{channel_id}", ids_text("channel", before, "any channel"),
                    ids_text("channel", list_gen_channels(c, gid), "any channel"))

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def remove_channel(self, guild_id: int, channel_id: int, *, actor: str,
                             reason: str | None = None) -> Change:
        def change(c: Conn, gid: int) -> Diff:
            before = list_gen_channels(c, gid)
            if not remove_gen_channel(c, gid, channel_id):
                raise UserFacingError("That channel is not a generation channel.")
            return ("channels.remove", f"channel:{channel_id}", ids_text("channel", before, "any channel"),
                    ids_text("channel", list_gen_channels(c, gid), "any channel"))

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def list_channels(self, guild_id: int) -> list[int]:
        """The generation channels; empty = /video works in every channel."""
        return await self.db.run(list_gen_channels, guild_id)

    async def add_blocked_term(self, guild_id: int, term: str, *, actor: str, reason: str | None = None
                               ) -> Change:
        text = blocked_term_text(term)

        def change(c: Conn, gid: int) -> Diff:
            before = len(list_blocklist(c, gid))
            if not add_blocklist_term(c, gid, text):
                raise UserFacingError(f"{text!r} is already on the blocklist.")
            return "blocklist.add", f"term:{text}", terms_text(before), terms_text(before + 1)

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def remove_blocked_term(self, guild_id: int, term: str, *, actor: str,
                                  reason: str | None = None) -> Change:
        text = blocked_term_text(term)

        def change(c: Conn, gid: int) -> Diff:
            before = len(list_blocklist(c, gid))
            if not remove_blocklist_term(c, gid, text):
                raise UserFacingError(f"{text!r} is not on the blocklist.")
            return "blocklist.remove", f"term:{text}", terms_text(before), terms_text(before - 1)

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def list_blocklist(self, guild_id: int) -> list[str]:
        return await self.db.run(list_blocklist, guild_id)

    # ---- guild settings ------------------------------------------------------------------------

    async def set_modrole(self, guild_id: int, role_id: int | None, *, actor: str,
                          reason: str | None = None) -> Change:
        """The role whose members may moderate (besides Manage Server); None clears it."""
        return await self._set_id(guild_id, "mod_role_id", "role", "modrole.set", role_id, actor, reason)

    async def set_logchannel(self, guild_id: int, channel_id: int | None, *, actor: str,
                             reason: str | None = None) -> Change:
        """Where moderator actions and budget warnings are posted; None clears it."""
        return await self._set_id(guild_id, "log_channel_id", "channel", "logchannel.set", channel_id, actor,
                                  reason)

    async def set_gallery(self, guild_id: int, channel_id: int | None, *, actor: str,
                          reason: str | None = None) -> Change:
        """Where members' shared results are posted (the Share button); None turns the gallery off."""
        return await self._set_id(guild_id, "gallery_channel_id", "channel", "gallery.set", channel_id, actor,
                                  reason)

    async def _set_id(self, guild_id: int, column: str, kind: str, action: str, value: int | None, actor: str,
                      reason: str | None) -> Change:
        """Set (None: clear) a setting that names a role or a channel, audited as ``kind:<id>``."""
        def named(ident: int | None) -> str | None:
            return f"{kind}:{ident}" if ident else None

        def change(c: Conn, gid: int) -> Diff:
            old = getattr(get_guild_settings(c, gid), column)
            update_guild_settings(c, gid, **{column: value})
            return action, named(value), named(old) or "none", named(value) or "none"

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def set_safety_mode(self, guild_id: int, mode: str, *, actor: str, reason: str | None = None
                              ) -> Change:
        """The guild's content check; never weaker than the config's ``runware.safety_mode``."""
        floor = self.cfg.runware.safety_mode
        mode = (mode or "").strip().lower()
        if mode not in SAFETY_STRENGTH:
            raise InvalidInput("mode", mode, "none, fast or full")
        if SAFETY_STRENGTH[mode] < SAFETY_STRENGTH[floor]:
            stronger = ", ".join(m for m in SAFETY_MODES if SAFETY_STRENGTH[m] >= SAFETY_STRENGTH[floor])
            raise InvalidInput("mode", mode, stronger, problem=(
                f"{mode!r} would be weaker than the bot's own content check ({floor!r}, set by the "
                "operator in runware.safety_mode); a server may only choose the same or a stricter one"))

        def change(c: Conn, gid: int) -> Diff:
            old = get_guild_settings(c, gid).safety_mode
            update_guild_settings(c, gid, safety_mode=mode)
            return "safety.mode", None, old or f"default ({floor})", mode

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def set_confirm_threshold(self, guild_id: int, amount: str, *, actor: str, reason: str | None = None
                                    ) -> Change:
        """Above this estimate (USD) a member confirms a job first; 0 = never ask."""
        allowed = "an amount in USD from 0 (never ask) up, e.g. 2.50"
        try:
            micro = usd_to_micro((amount or "").strip().lstrip("$"))
        except ValueError:
            raise InvalidInput("amount", amount, allowed) from None
        if micro < 0:
            raise InvalidInput("amount", amount, allowed)

        def text(value: int | None) -> str:
            if value is None:
                return f"default ({text(self.cfg.limits.confirm_above_micro_usd)})"
            return "never" if value == 0 else micro_to_usd(value)

        def change(c: Conn, gid: int) -> Diff:
            old = get_guild_settings(c, gid).confirm_above_micro
            update_guild_settings(c, gid, confirm_above_micro=micro)
            return "confirm.set", None, text(old), text(micro)

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    async def settings(self, guild_id: int) -> GuildSettings:
        return await self.db.run(get_guild_settings, guild_id)
