"""Entitlements in the fake Discord (App Subscriptions), as a mixin of FakeDiscord: a test grants a user
or a guild an entitlement to a SKU, and every INTERACTION_CREATE of that user (or in that guild) carries
it in ``entitlements``, as Discord does.

The fake sends every entitlement it holds for the user and the guild, ended and deleted ones too: the
bot must judge them itself. Each object is checked against Discord's schema (``EntitlementResponse``)
when it is granted, so a test cannot build one Discord would never send.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.discord_schema import check_object
from tests.fakes.discord_state import iso, snowflake

APPLICATION_SUBSCRIPTION = 8  # Discord's entitlement type for a subscription bought in Discord
TEST_MODE_PURCHASE = 4  # an owner's test entitlement (the Developer Portal): no starts_at, no ends_at


class EntitlementsMixin:
    """``self`` is the FakeDiscord."""

    def _init_entitlements(self) -> None:
        self.entitlements: list[dict] = []

    def grant_entitlement(self, sku_id: int, *, user_id: int | None = None, guild_id: int | None = None,
                          starts_at: float | None = None, ends_at: float | None = None, deleted: bool = False,
                          type: int = APPLICATION_SUBSCRIPTION, buyer_id: int | None = None) -> dict:  # noqa: A002
        """An entitlement to ``sku_id`` for one user, or (``guild_id``) for a whole guild; times are
        epoch seconds (None: not given, as for test entitlements). A guild's entitlement names who bought
        it in ``user_id`` (the schema requires one): ``buyer_id``, else the guild's owner."""
        if (user_id is None) == (guild_id is None):
            raise ValueError("grant an entitlement to a user or to a guild")
        if guild_id is not None:
            user_id = buyer_id or self.guilds[guild_id].owner_id  # type: ignore[attr-defined]
        entitlement: dict[str, Any] = {
            "id": str(snowflake()), "sku_id": str(sku_id), "application_id": str(self.app_id),  # type: ignore[attr-defined]
            "user_id": str(user_id), "type": type, "deleted": deleted, "consumed": False,
            "starts_at": None if starts_at is None else iso(starts_at),
            "ends_at": None if ends_at is None else iso(ends_at),
        }
        if guild_id is not None:
            entitlement["guild_id"] = str(guild_id)
        violation = check_object("EntitlementResponse", entitlement)
        if violation is not None:
            raise ValueError(f"Discord would never send this entitlement: {violation}")
        self.entitlements.append(entitlement)
        return entitlement

    def entitlements_for(self, user_id: int, guild_id: int | None) -> list[dict]:
        """What an interaction of ``user_id`` (in ``guild_id``) carries: the user's own entitlements and
        the guild's."""
        out = []
        for e in self.entitlements:
            if "guild_id" in e:
                if guild_id is not None and int(e["guild_id"]) == guild_id:
                    out.append(dict(e))
            elif int(e["user_id"]) == user_id:
                out.append(dict(e))
        return out
