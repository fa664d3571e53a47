"""SQL for the ledger. Balances are never stored: they are derived here from the append-only rows.

A job counts against limits with its reserve until it is finalized, then with its settled cost, or 0
once released. Refunds give back to the member's and the guild's totals, not to the global ceiling.
"""

from __future__ import annotations

from bot.db.connection import NO_LIMIT, Conn, query
from bot.db.records import JobMoney, LedgerRecord, SpendNumbers

# Counted spend is SUM(effect_micro) (see the ledger table in 001-initial.sql); the member's open
# reserves are what was reserved minus what settles and releases have taken back.
_SPEND_NUMBERS = """
WITH member AS (
    SELECT COALESCE(SUM(effect_micro), 0) AS spent,
           COALESCE(SUM(CASE kind WHEN 'credit' THEN amount_micro ELSE 0 END), 0) AS credit,
           COALESCE(SUM(CASE kind WHEN 'reserve' THEN amount_micro
                                  WHEN 'settle' THEN effect_micro - amount_micro
                                  WHEN 'release' THEN -amount_micro ELSE 0 END), 0) AS pending
    FROM ledger WHERE guild_id = :g AND user_id = :u AND month = :month
)
SELECT
    (SELECT COALESCE(SUM(j.variations), 0) FROM jobs j
     WHERE j.guild_id = :g AND j.user_id = :u AND j.day = :day
         AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.job_id = j.id AND l.kind = 'release'))
        AS videos_today,
    member.spent AS member_spent_month,
    member.credit AS member_credit_month,
    (SELECT COUNT(*) FROM jobs
     WHERE guild_id = :g AND user_id = :u AND state IN ('queued', 'submitted', 'processing'))
        AS member_in_flight,  -- a job cancelled while at Runware still runs there until it ends
    member.pending AS member_pending_month,
    (SELECT COALESCE(SUM(effect_micro), 0) FROM ledger WHERE guild_id = :g AND month = :month)
        AS guild_spent_month,
    (SELECT COALESCE(SUM(effect_micro), 0) FROM ledger
     WHERE day = :day AND kind IN ('reserve', 'settle', 'release'))  -- refunds still count here
        AS global_spent_day
FROM member
"""


@query
def lock_spend(c: Conn, guild_id: int, user_id: int, *, bot_wide: bool) -> None:
    """Serialise the reservations that read, then raise, the same spend: the bot-wide day (when the
    global ceiling is finite: a sum over every guild), the guild's month and the member's counts.
    SQLite needs nothing: BEGIN IMMEDIATE already holds its one write lock. PostgreSQL takes advisory
    locks that last until the transaction ends, always in that order, so two reserves never deadlock;
    READ COMMITTED then reads the counts as the previous holder committed them."""
    if c.store != "postgres":
        return
    keys = [f"spend:guild:{guild_id}", f"spend:member:{guild_id}:{user_id}"]
    if bot_wide:
        keys.insert(0, "spend:bot")
    for key in keys:
        c.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))


@query
def spend_numbers(c: Conn, guild_id: int, user_id: int, day: str, month: str) -> SpendNumbers:
    row = c.fetchone(_SPEND_NUMBERS, {"g": guild_id, "u": user_id, "day": day, "month": month})
    assert row is not None
    return SpendNumbers.from_row(row)


@query
def guild_spent_month(c: Conn, guild_id: int, month: str) -> int:
    """A guild's counted spend this month, refunds given back (budget warnings, /genadmin usage)."""
    return int(
        c.fetchval(
            "SELECT SUM(effect_micro) FROM ledger WHERE guild_id = ? AND month = ?",
            (guild_id, month),
            default=0,
        )
    )


_EFFECT_SIGN = {"reserve": 1, "release": -1, "refund": -1, "credit": 0}


@query
def insert_ledger(
    c: Conn,
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
    reserved_micro: int | None = None,
) -> int | None:
    """The new row's id, or None when the database already holds this job's row of that kind
    (the unique partial indexes make settle/release/refund exactly-once). A settle needs
    ``reserved_micro`` (the job's reserve) to record what it changes in counted spend."""
    if kind == "settle":
        if reserved_micro is None:
            raise ValueError("a settle row needs reserved_micro")
        effect = amount_micro - reserved_micro
    else:
        effect = _EFFECT_SIGN[kind] * amount_micro
    return c.fetchval(
        """INSERT INTO ledger (at, kind, guild_id, user_id, job_id, amount_micro, effect_micro, day, month,
               actor, reason)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id""",
        (at, kind, guild_id, user_id, job_id, amount_micro, effect, day, month, actor, reason),
    )


@query
def job_money(c: Conn, job_id: int) -> JobMoney:
    rows = c.fetchall(
        "SELECT kind, amount_micro FROM ledger WHERE job_id = ? AND kind <> 'credit'", (job_id,)
    )
    by_kind = {r["kind"]: int(r["amount_micro"]) for r in rows}
    return JobMoney(
        reserved=by_kind.get("reserve", 0),
        settled=by_kind.get("settle"),
        released=by_kind.get("release"),
        refunded=by_kind.get("refund"),
    )


@query
def ledger_for_job(c: Conn, job_id: int) -> list[LedgerRecord]:
    rows = c.fetchall("SELECT * FROM ledger WHERE job_id = ? ORDER BY id", (job_id,))
    return [LedgerRecord.from_row(r) for r in rows]


@query
def ledger_rows(
    c: Conn,
    *,
    guild_id: int | None = None,
    user_id: int | None = None,
    kind: str | None = None,
    since_day: str | None = None,
    limit: int | None = None,
) -> list[LedgerRecord]:
    rows = c.fetchall(
        """SELECT * FROM ledger
           WHERE (:g IS NULL OR guild_id = :g) AND (:u IS NULL OR user_id = :u)
               AND (:kind IS NULL OR kind = :kind) AND (:since IS NULL OR day >= :since)
           ORDER BY id LIMIT :limit""",
        {"g": guild_id, "u": user_id, "kind": kind, "since": since_day,
         "limit": NO_LIMIT if limit is None or limit < 0 else limit},
    )
    return [LedgerRecord.from_row(r) for r in rows]


@query
def member_credit_month(c: Conn, guild_id: int, user_id: int, month: str) -> int:
    """The sum of a member's credits (negative ones included) for ``month``."""
    return int(c.fetchval(
        """SELECT COALESCE(SUM(amount_micro), 0) FROM ledger
           WHERE kind = 'credit' AND guild_id = ? AND user_id = ? AND month = ?""",
        (guild_id, user_id, month), default=0,
    ))
