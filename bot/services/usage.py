"""Usage reports (/genadmin usage, ``klingbot usage``): the ledger summed per user, model or day over
a period, and the same rows as CSV with USD to 6 decimals. Every number comes straight from the
ledger rows of the jobs in the period (a job counts on the day it was created, as quotas do)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import timedelta

from bot.config import Config
from bot.db import Database
from bot.db.reports import usage_by
from bot.errors import InvalidInput
from bot.services.clock import Clock, day_of, local
from bot.usd import micro_to_decimal_str

PERIODS = ("today", "7d", "month", "all")
GROUPINGS = ("user", "model", "day")
MONEY_COLUMNS = ("reserved", "settled", "released", "refunded", "open", "net")


@dataclass(frozen=True)
class UsageLine:
    """One row: the jobs of one user / model / day and the sum of each ledger kind (micro-USD).
    ``open_micro`` is the part of ``reserved_micro`` not settled or released yet."""

    key: str
    jobs: int
    videos: int
    reserved_micro: int
    settled_micro: int
    released_micro: int
    refunded_micro: int
    open_micro: int

    @property
    def net_micro(self) -> int:
        """What was spent and kept: settled minus refunded."""
        return self.settled_micro - self.refunded_micro


@dataclass(frozen=True)
class UsageReport:
    guild_id: int | None  # None = every guild and the terminal
    period: str
    by: str
    since_day: str | None  # first day counted, None = all time
    rows: list[UsageLine]

    @property
    def total(self) -> UsageLine:
        sums = [sum(getattr(r, f.name) for r in self.rows) for f in fields(UsageLine)[1:]]
        return UsageLine("total", *sums)

    @property
    def filename(self) -> str:
        return f"usage-{self.period}-by-{self.by}.csv"

    def csv(self) -> str:
        return to_csv(self.rows, self.by)


def since_day(period: str, now: float, cfg: Config) -> str | None:
    """The first day ('YYYY-MM-DD', in progress.timezone) a period counts; None for 'all'."""
    tz = cfg.progress.tz
    if period == "today":
        return day_of(now, tz)
    if period == "7d":  # today and the 6 days before it
        return (local(now, tz).date() - timedelta(days=6)).isoformat()
    if period == "month":
        return local(now, tz).strftime("%Y-%m-01")
    if period == "all":
        return None
    raise InvalidInput("period", period, ", ".join(PERIODS))


def to_csv(rows: Sequence[UsageLine], key_name: str = "key") -> str:
    """A header and one line per row; money as USD with exactly 6 decimals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([key_name, "jobs", "videos", *(f"{name}_usd" for name in MONEY_COLUMNS)])
    for r in rows:
        writer.writerow([r.key, r.jobs, r.videos,
                         *(micro_to_decimal_str(getattr(r, f"{name}_micro")) for name in MONEY_COLUMNS)])
    return out.getvalue()


class Usage:
    def __init__(self, db: Database, cfg: Config, clock: Clock | None = None) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock or Clock()

    async def report(self, guild_id: int | None, period: str = "month", by: str = "user") -> UsageReport:
        """``period`` today | 7d | month | all; ``by`` user | model | day."""
        period = (period or "").strip().lower()
        by = (by or "").strip().lower()
        first = since_day(period, self.clock.now(), self.cfg)
        if by not in GROUPINGS:
            raise InvalidInput("by", by, ", ".join(GROUPINGS))
        rows = await self.db.run_read(usage_by, guild_id=guild_id, since_day=first, by=by)
        return UsageReport(guild_id, period, by, first, [UsageLine(**r) for r in rows])
