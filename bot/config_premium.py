"""The [premium] table of the configuration (bot/config.py holds the rest): what a member with an active
Discord entitlement to one of ``sku_ids`` gets (README "Premium (Discord subscriptions)")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from bot.usd import usd_to_micro

PREMIUM_UNLIMITED = "unlimited"  # a [premium] limit that lifts the member's limit


def _premium_limit(kind: str):
    """A [premium] limit: "default" (keep what the member gets anyway; ``None``), "unlimited", or a
    number that is not negative (USD for money, becoming micro-USD)."""
    def parse(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() == "default"):
            return None
        if isinstance(value, str) and value.strip().lower() == PREMIUM_UNLIMITED:
            return PREMIUM_UNLIMITED
        if kind == "usd":
            try:
                amount = usd_to_micro(value)
            except ValueError:
                raise ValueError('expected an amount in USD, "unlimited" or "default"') from None
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ValueError('expected a whole number, "unlimited" or "default"')
        else:
            amount = value
        if amount < 0:
            raise ValueError('expected 0 or more, "unlimited" or "default"')
        return amount

    return BeforeValidator(parse)


PremiumCount = Annotated[int | Literal["unlimited"] | None, _premium_limit("count")]
PremiumMicroUSD = Annotated[int | Literal["unlimited"] | None, _premium_limit("usd")]


def _sku_id(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**64:
        raise ValueError("expected a Discord SKU id (a snowflake: a whole number such as 1234567890123456789)")
    return value


class PremiumConfig(BaseModel):
    """What a subscriber (an active Discord entitlement to one of ``sku_ids``) gets. A limit left at
    "default" (``None``) keeps what the member gets anyway; ``sku_ids = []`` turns premium off."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)  # as every section

    sku_ids: list[Annotated[int, BeforeValidator(_sku_id)]] = []
    daily_videos: PremiumCount = None
    monthly_micro_usd: PremiumMicroUSD = Field(None, alias="monthly_usd")
    max_concurrent: PremiumCount = None

    @property
    def enabled(self) -> bool:
        return bool(self.sku_ids)
