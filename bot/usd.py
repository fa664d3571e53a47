"""USD amounts: integer micro-USD inside the bot (no float ever reaches the ledger), decimal USD
for people, config files and CSV exports."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

MICRO = 1_000_000


def usd_to_micro(value: Any) -> int:
    """USD (int, float, decimal string) -> integer micro-USD, rounded half up."""
    if isinstance(value, bool):
        raise ValueError("expected an amount in USD, e.g. 5.00")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError("expected an amount in USD, e.g. 5.00") from exc
    if not amount.is_finite():
        raise ValueError("expected a finite amount in USD")
    return int((amount * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def micro_to_usd(micro: int) -> str:
    """Integer micro-USD -> '$1.234567' trimmed to cents where exact, for people."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    text = f"{frac:06d}".rstrip("0")
    if len(text) < 2:
        text = text.ljust(2, "0")
    return f"{sign}${whole}.{text}"


def micro_to_decimal_str(micro: int) -> str:
    """Integer micro-USD -> '1.234567' (always 6 decimals), for CSV exports."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"
