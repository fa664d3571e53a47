"""Premium through Discord's monetization (App Subscriptions): who is a subscriber, and the button
that lets a member who is not subscribe from a quota refusal.

Discord sends the entitlements the user and the guild have for the app with every interaction, so
nothing is stored: each request is judged on what came with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

import discord

from bot.config_premium import PremiumConfig
from bot.errors import LimitExceeded

# The refusals a subscription can lift ([premium] key -> PremiumConfig attribute); the others (ban,
# pause, the guild's budget, the bot's daily ceiling) bind subscribers too.
PREMIUM_LIMITS = {"daily_videos": "daily_videos", "monthly_usd": "monthly_micro_usd",
                  "max_concurrent": "max_concurrent"}


class EntitlementLike(Protocol):
    sku_id: int
    user_id: int | None
    guild_id: int | None
    deleted: bool
    starts_at: datetime | None
    ends_at: datetime | None


def counts(ent: EntitlementLike, sku_ids: Iterable[int], *, user_id: int, guild_id: int | None,
           now: datetime) -> bool:
    """Whether one entitlement makes this member premium: one of our SKUs, not deleted, ``now`` in
    [starts_at, ends_at) where they are given (test entitlements have neither), and granted to this
    guild (guild_id set: every member of it) or to this user (no guild_id)."""
    if ent.sku_id not in set(sku_ids) or ent.deleted:
        return False
    if ent.starts_at is not None and now < ent.starts_at:
        return False
    if ent.ends_at is not None and now >= ent.ends_at:
        return False
    if ent.guild_id is not None:
        # A guild subscription also names its buyer in user_id; it is the guild's, not the buyer's.
        return guild_id is not None and ent.guild_id == guild_id
    return ent.user_id == user_id


def is_premium(interaction: discord.Interaction, premium: PremiumConfig | None) -> bool:
    if premium is None or not premium.enabled:
        return False
    now = discord.utils.utcnow()
    return any(counts(e, premium.sku_ids, user_id=interaction.user.id, guild_id=interaction.guild_id, now=now)
               for e in interaction.entitlements)


def premium_config(interaction: discord.Interaction) -> PremiumConfig | None:
    """The running bot's [premium] table (None for a client that is not a KlingBot)."""
    cfg = getattr(interaction.client, "cfg", None)
    return getattr(cfg, "premium", None)


def upsell_view(error: BaseException, interaction: discord.Interaction) -> discord.ui.View | None:
    """Discord's premium button (style 6, only ``sku_id``) for a member who is not premium, refused by
    a limit that the [premium] table raises; None otherwise."""
    premium = premium_config(interaction)
    if not isinstance(error, LimitExceeded) or premium is None or not premium.enabled:
        return None
    attribute = PREMIUM_LIMITS.get(error.limit)
    value = getattr(premium, attribute) if attribute else None
    if value is None:
        return None
    # Subscribing must help: a count above what the member was allowed (a monthly allowance the
    # refusal gives with this month's credit in it, so it is not compared).
    if isinstance(value, int) and error.limit != "monthly_usd" and error.allowed is not None \
            and value <= error.allowed:
        return None
    if is_premium(interaction, premium):
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(style=discord.ButtonStyle.premium, sku_id=premium.sku_ids[0]))
    return view
