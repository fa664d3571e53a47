"""Time, injectable. Quota buckets (day, month) are computed in the configured time zone, so the
clock is passed in rather than read from the system: tests move it across midnight at will."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, tzinfo


class Clock:
    """Wall-clock time as unix seconds."""

    def now(self) -> float:
        return time.time()


SystemClock = Clock  # the name the engine uses


class FixedClock(Clock):
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now

    def set(self, ts: float | datetime) -> float:
        self._now = ts.timestamp() if isinstance(ts, datetime) else float(ts)
        return self._now


def local(ts: float, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(ts, tz)


def day_of(ts: float, tz: tzinfo) -> str:
    """'YYYY-MM-DD' of a unix time in ``tz`` (the daily quota bucket)."""
    return local(ts, tz).strftime("%Y-%m-%d")


def month_of(ts: float, tz: tzinfo) -> str:
    """'YYYY-MM' of a unix time in ``tz`` (the monthly quota bucket)."""
    return local(ts, tz).strftime("%Y-%m")


def next_day_start(ts: float, tz: tzinfo) -> datetime:
    """Local midnight after ``ts`` as an aware datetime in ``tz`` (DST-safe: built from the date)."""
    d = local(ts, tz).date() + timedelta(days=1)
    return datetime(d.year, d.month, d.day, tzinfo=tz)


def next_month_start(ts: float, tz: tzinfo) -> datetime:
    d = local(ts, tz)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return datetime(year, month, 1, tzinfo=tz)


def duration_text(seconds: float) -> str:
    """'3 h 12 min', '12 d 4 h', '45 min', 'less than a minute'."""
    minutes = int(max(seconds, 0) // 60)
    if minutes < 1:
        return "less than a minute"
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min"


def describe_reset(at: datetime, now: float) -> str:
    """'at 00:00 UTC (in 3 h 12 min)', or with the date when it is more than a day away."""
    when = at.strftime("%H:%M %Z")
    left = at.timestamp() - now
    if left > 24 * 3600:
        when = f"on {at.day} {at:%b} at {when}"
    else:
        when = f"at {when}"
    return f"{when} (in {duration_text(left)})"
