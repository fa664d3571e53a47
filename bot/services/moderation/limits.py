"""The values a limit option takes: "leave unchanged" / "unlimited" / "default" markers or a number,
the parsers that turn option text into them (clear errors naming the field and the value), the
override column they are stored as, and their text in the audit's before/after columns.

``KEEP`` leaves a limit as it is, ``UNLIMITED`` lifts it, ``DEFAULT`` removes the override (the
roles' or the config's value applies again), an int sets it (micro-USD for money)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bot.db.records import UNLIMITED as UNLIMITED_COLUMN
from bot.db.records import LimitOverride
from bot.errors import InvalidInput
from bot.usd import MICRO, micro_to_usd, usd_to_micro

MAX_COUNT = 1_000_000
MAX_USD_MICRO = 1_000_000 * MICRO


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name.upper()


KEEP = _Marker("keep")
UNLIMITED = _Marker("unlimited")
DEFAULT = _Marker("default")
Limit = int | _Marker

COUNT_ALLOWED = f'a whole number from 0 to {MAX_COUNT}, "unlimited", or "default" (the usual limit)'
USD_ALLOWED = 'an amount in USD such as 5 or 2.50, "unlimited", or "default" (the usual limit)'


def _marker(value: Any) -> _Marker | None:
    """KEEP for an option not given, the marker a keyword names, None for a number to parse."""
    if value is None:
        return KEEP
    if isinstance(value, _Marker):
        return value
    return {"unlimited": UNLIMITED, "default": DEFAULT}.get(str(value).strip().lower())


def parse_count_limit(field: str, value: str | int | _Marker | None) -> Limit:
    """Option text -> a count limit. None (option not given) -> KEEP."""
    marker = _marker(value)
    if marker is not None:
        return marker
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) > MAX_COUNT:
        raise InvalidInput(field, value, COUNT_ALLOWED)
    return int(text)


def parse_usd_limit(field: str, value: str | float | Decimal | _Marker | None) -> Limit:
    """Option text in USD -> micro-USD (or a marker). None (option not given) -> KEEP."""
    marker = _marker(value)
    if marker is not None:
        return marker
    try:
        micro = usd_to_micro(str(value).strip().removeprefix("$"))
    except ValueError:
        raise InvalidInput(field, value, USD_ALLOWED) from None
    if not 0 <= micro <= MAX_USD_MICRO:
        raise InvalidInput(field, value, USD_ALLOWED, problem=f"{value} is out of range (0 to 1000000)")
    return micro


def stored_limit(field: str, value: Limit, current: int | None) -> int | None:
    """A limit value -> the override column (None = no override, -1 = unlimited)."""
    if value is KEEP:
        return current
    if value is UNLIMITED:
        return UNLIMITED_COLUMN
    if value is DEFAULT:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field}: pass an int, KEEP, UNLIMITED or DEFAULT, not {value!r}")
    if value < 0:
        raise InvalidInput(field, value, "0 or more")
    return value


def limit_text(value: int | None, money: bool) -> str:
    if value is None:
        return "default"
    if value == UNLIMITED_COLUMN:
        return "unlimited"
    return micro_to_usd(value) if money else str(value)


def limits_text(o: LimitOverride | None) -> str:
    """'daily_videos=10, monthly_usd=$5.00, max_concurrent=default' (the audit's before/after)."""
    o = o or LimitOverride()
    return (f"daily_videos={limit_text(o.daily_videos, False)}, "
            f"monthly_usd={limit_text(o.monthly_micro, True)}, "
            f"max_concurrent={limit_text(o.max_concurrent, False)}")
