"""Values of the moderation service: "leave unchanged" / "unlimited" / "default" markers for limits,
the parsers that turn option text into them (clear errors naming the field and the value), the
texts written to the audit's before/after columns, and what the actions return."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.config import MICRO, SAFETY_MODES, micro_to_usd, usd_to_micro
from bot.db.records import UNLIMITED as UNLIMITED_COLUMN
from bot.db.records import BanRecord, GuildSettings, LimitOverride
from bot.errors import InvalidInput
from bot.services.quotas import MemberUsage

# A moderator action's effect, as audited: (action, target, before, after).
Diff = tuple[str, str | None, str | None, str | None]

MAX_COUNT = 1_000_000
MAX_USD_MICRO = 1_000_000 * MICRO
MAX_REASON = 500
MAX_TERM = 100
AUDIT_MAX = 100
SAFETY_STRENGTH = {mode: rank for rank, mode in enumerate(SAFETY_MODES)}  # none < fast < full


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


def _keyword(value: Any) -> _Marker | None:
    text = str(value).strip().lower()
    return {"unlimited": UNLIMITED, "default": DEFAULT}.get(text)


def parse_count_limit(field: str, value: str | int | _Marker | None) -> Limit:
    """Option text -> a count limit. None (option not given) -> KEEP."""
    if value is None:
        return KEEP
    if isinstance(value, _Marker):
        return value
    marker = _keyword(value)
    if marker is not None:
        return marker
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) > MAX_COUNT:
        raise InvalidInput(field, value, COUNT_ALLOWED)
    return int(text)


def parse_usd_limit(field: str, value: str | float | Decimal | _Marker | None) -> Limit:
    """Option text in USD -> micro-USD (or a marker). None (option not given) -> KEEP."""
    if value is None:
        return KEEP
    if isinstance(value, _Marker):
        return value
    marker = _keyword(value)
    if marker is not None:
        return marker
    try:
        micro = usd_to_micro(str(value).strip().removeprefix("$"))
    except ValueError:
        raise InvalidInput(field, value, USD_ALLOWED) from None
    if not 0 <= micro <= MAX_USD_MICRO:
        raise InvalidInput(field, value, USD_ALLOWED, problem=f"{value} is out of range (0 to 1000000)")
    return micro


def parse_usd_amount(field: str, value: str | float | Decimal) -> int:
    """A signed, non-zero amount in USD -> micro-USD (credits)."""
    allowed = "a non-zero amount in USD such as 2.50, or -1.00 to take allowance away"
    try:
        micro = usd_to_micro(str(value).strip().replace("$", ""))
    except ValueError:
        raise InvalidInput(field, value, allowed) from None
    if micro == 0 or abs(micro) > MAX_USD_MICRO:
        raise InvalidInput(field, value, allowed)
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


def clean_reason(reason: str | None, *, required: bool = False) -> str | None:
    text = (reason or "").strip()
    if required and not text:
        raise InvalidInput("reason", reason or "", "a short reason (it goes to the audit log)")
    if len(text) > MAX_REASON:
        raise InvalidInput("reason", text, f"at most {MAX_REASON} characters",
                           problem=f"is {len(text)} characters long")
    return text or None


def ban_text(ban: BanRecord | None) -> str:
    if ban is None:
        return "not banned"
    return f"banned: {ban.reason}" if ban.reason else "banned"


def pause_text(s: GuildSettings) -> str:
    if not s.paused:
        return "running"
    return f"paused: {s.pause_reason}" if s.pause_reason else "paused"


def terms_text(count: int) -> str:
    return "1 term" if count == 1 else f"{count} terms"


def ids_text(kind: str, ids: list[int], empty: str) -> str:
    return " ".join(f"{kind}:{i}" for i in ids) if ids else empty


@dataclass(frozen=True)
class Change:
    """One moderator action as audited, and where to announce it (the guild's log channel as it is
    after the change, read in the same transaction; None = none set)."""

    audit_id: int
    guild_id: int
    actor: str
    action: str
    target: str | None
    before: str | None
    after: str | None
    reason: str | None
    at: float
    log_channel_id: int | None
    amount_micro: int | None = None  # credit / refund


@dataclass(frozen=True)
class MemberReport:
    """quota show: the member's numbers, their own override and their ban."""

    usage: MemberUsage
    override: LimitOverride | None
    ban: BanRecord | None


@dataclass(frozen=True)
class BudgetWarning:
    guild_id: int
    channel_id: int
    level: int  # 80 or 100 (%)
    spent_micro: int
    budget_micro: int
