"""SQL for the ledger. Balances are never stored: they are derived here from the append-only rows.

A job counts against limits with its reserve until it is finalized, then with its settled cost, or 0
once released. Refunds give back to the member's and the guild's totals, not to the global ceiling.
"""

from __future__ import annotations

from typing import Literal

from bot.db.connection import Executor
from bot.db.records import JobMoney, LedgerRecord, SpendNumbers, UsageRow

# Counted spend of the reserves matching {where} (over ledger r, with r.kind = 'reserve').
_COUNTED = """(SELECT COALESCE(SUM(CASE f.kind WHEN 'settle' THEN f.amount_micro
                                             WHEN 'release' THEN 0
                                             ELSE r.amount_micro END), 0)
              FROM ledger r LEFT JOIN ledger f
                  ON f.job_id = r.job_id AND f.kind IN ('settle', 'release')
              WHERE r.kind = 'reserve' AND {where})"""

_SPEND_NUMBERS = f"""
SELECT
    (SELECT COALESCE(SUM(j.variations), 0) FROM jobs j
     WHERE j.guild_id = :g AND j.user_id = :u AND j.day = :day
         AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.job_id = j.id AND l.kind = 'release'))
        AS videos_today,
    {_COUNTED.format(where="r.guild_id = :g AND r.user_id = :u AND r.month = :month")}
      - (SELECT COALESCE(SUM(amount_micro), 0) FROM ledger
         WHERE kind = 'refund' AND guild_id = :g AND user_id = :u AND month = :month)
        AS member_spent_month,
    (SELECT COALESCE(SUM(amount_micro), 0) FROM ledger
     WHERE kind = 'credit' AND guild_id = :g AND user_id = :u AND month = :month)
        AS member_credit_month,
    (SELECT COUNT(*) FROM jobs
     WHERE guild_id = :g AND user_id = :u AND state IN ('queued', 'submitted', 'processing')
         AND cancel_requested = 0)
        AS member_in_flight,
    (SELECT COALESCE(SUM(r.amount_micro), 0) FROM ledger r
     WHERE r.kind = 'reserve' AND r.guild_id = :g AND r.user_id = :u AND r.month = :month
         AND NOT EXISTS (SELECT 1 FROM ledger f WHERE f.job_id = r.job_id
                         AND f.kind IN ('settle', 'release')))
        AS member_pending_month,
    {_COUNTED.format(where="r.guild_id = :g AND r.month = :month")}
      - (SELECT COALESCE(SUM(amount_micro), 0) FROM ledger
         WHERE kind = 'refund' AND guild_id = :g AND month = :month)
        AS guild_spent_month,
    {_COUNTED.format(where="r.day = :day")}
        AS global_spent_day
"""


async def spend_numbers(c: Executor, guild_id: int, user_id: int, day: str, month: str) -> SpendNumbers:
    row = await c.fetchone(_SPEND_NUMBERS, {"g": guild_id, "u": user_id, "day": day, "month": month})
    assert row is not None
    return SpendNumbers.from_row(row)


async def guild_spent_month(c: Executor, guild_id: int, month: str) -> int:
    """A guild's counted spend this month minus refunds (for budget warnings and /genadmin usage)."""
    return int(
        await c.fetchval(
            f"""SELECT {_COUNTED.format(where="r.guild_id = :g AND r.month = :month")}
                  - (SELECT COALESCE(SUM(amount_micro), 0) FROM ledger
                     WHERE kind = 'refund' AND guild_id = :g AND month = :month)""",
            {"g": guild_id, "month": month},
            default=0,
        )
    )


async def insert_ledger(
    c: Executor,
    *,
    kind: str,
    guild_id: int,
    user_id: int,
    job_id: int | None,
    amount_micro: int,
    day: str,
    month: str,
    actor: str,
    reason: str | None,
    at: float,
) -> int | None:
    """The new row's id, or None when the database already holds this job's row of that kind
    (the unique partial indexes make settle/release/refund exactly-once)."""
    return await c.fetchval(
        """INSERT INTO ledger (at, kind, guild_id, user_id, job_id, amount_micro, day, month, actor, reason)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id""",
        (at, kind, guild_id, user_id, job_id, amount_micro, day, month, actor, reason),
    )


async def job_money(c: Executor, job_id: int) -> JobMoney:
    rows = await c.fetchall(
        "SELECT kind, amount_micro FROM ledger WHERE job_id = ? AND kind <> 'credit'", (job_id,)
    )
    by_kind = {r["kind"]: int(r["amount_micro"]) for r in rows}
    return JobMoney(
        reserved=by_kind.get("reserve", 0),
        settled=by_kind.get("settle"),
        released=by_kind.get("release"),
        refunded=by_kind.get("refund"),
    )


async def ledger_for_job(c: Executor, job_id: int) -> list[LedgerRecord]:
    rows = await c.fetchall("SELECT * FROM ledger WHERE job_id = ? ORDER BY id", (job_id,))
    return [LedgerRecord.from_row(r) for r in rows]


async def ledger_rows(
    c: Executor,
    *,
    guild_id: int | None = None,
    user_id: int | None = None,
    kind: str | None = None,
    since_day: str | None = None,
    limit: int = -1,
) -> list[LedgerRecord]:
    rows = await c.fetchall(
        """SELECT * FROM ledger
           WHERE (:g IS NULL OR guild_id = :g) AND (:u IS NULL OR user_id = :u)
               AND (:kind IS NULL OR kind = :kind) AND (:since IS NULL OR day >= :since)
           ORDER BY id LIMIT :limit""",
        {"g": guild_id, "u": user_id, "kind": kind, "since": since_day, "limit": limit},
    )
    return [LedgerRecord.from_row(r) for r in rows]


_USAGE_KEYS = {"user": "CAST(j.user_id AS TEXT)", "model": "j.model_key", "day": "j.day"}


async def usage_report(
    c: Executor,
    *,
    guild_id: int | None,
    since_day: str | None,
    by: Literal["user", "model", "day"],
) -> list[UsageRow]:
    """Jobs created on or after ``since_day`` (None = all time), grouped; ``guild_id`` None = all."""
    key = _USAGE_KEYS[by]  # a fixed expression chosen from the whitelist, never user text
    rows = await c.fetchall(
        f"""SELECT {key} AS key, COUNT(*) AS jobs,
                SUM(CASE WHEN rel.id IS NULL THEN j.variations ELSE 0 END) AS videos,
                SUM(COALESCE(s.amount_micro, 0)) AS spent_micro,
                SUM(CASE WHEN s.id IS NULL AND rel.id IS NULL THEN COALESCE(r.amount_micro, 0) ELSE 0 END)
                    AS pending_micro,
                SUM(COALESCE(rf.amount_micro, 0)) AS refunded_micro
            FROM jobs j
            LEFT JOIN ledger r ON r.job_id = j.id AND r.kind = 'reserve'
            LEFT JOIN ledger s ON s.job_id = j.id AND s.kind = 'settle'
            LEFT JOIN ledger rel ON rel.job_id = j.id AND rel.kind = 'release'
            LEFT JOIN ledger rf ON rf.job_id = j.id AND rf.kind = 'refund'
            WHERE (:g IS NULL OR j.guild_id = :g) AND (:since IS NULL OR j.day >= :since)
            GROUP BY key ORDER BY {"key" if by == "day" else "spent_micro DESC, key"}""",
        {"g": guild_id, "since": since_day},
    )
    return [UsageRow.from_row(r) for r in rows]
