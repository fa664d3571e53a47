"""Money actions: credits to a member's monthly allowance, refunds of a settled job, the guild's
monthly budget and the 80% / 100% warnings about it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bot.db import Conn
from bot.db.guilds import get_guild_settings, guilds_with_log_channel, update_guild_settings
from bot.db.jobs import get_job
from bot.db.money import insert_ledger, member_credit_month
from bot.errors import InvalidInput, UserFacingError
from bot.services.clock import day_of, month_of
from bot.services.moderation.audit import AuditedActions, Change, Diff, audited, clean_reason
from bot.services.moderation.limits import KEEP, MAX_USD_MICRO, USD_ALLOWED, Limit, limit_text, stored_limit
from bot.usd import micro_to_usd, usd_to_micro

CREDIT_ALLOWED = "a non-zero amount in USD such as 2.50, or -1.00 to take allowance away"


@dataclass(frozen=True)
class BudgetWarning:
    guild_id: int
    channel_id: int
    level: int  # 80 or 100 (%)
    spent_micro: int
    budget_micro: int


def parse_usd_amount(field: str, value: str | float | Decimal) -> int:
    """A signed, non-zero amount in USD -> micro-USD (credits)."""
    try:
        micro = usd_to_micro(str(value).strip().replace("$", ""))
    except ValueError:
        raise InvalidInput(field, value, CREDIT_ALLOWED) from None
    if micro == 0 or abs(micro) > MAX_USD_MICRO:
        raise InvalidInput(field, value, CREDIT_ALLOWED)
    return micro


class MoneyActions(AuditedActions):
    async def credit(self, guild_id: int, user_id: int, amount_micro: int, *, actor: str,
                     reason: str) -> Change:
        """Add to (negative: take from) the member's monthly USD allowance for the current month."""
        if isinstance(amount_micro, bool) or not isinstance(amount_micro, int) or amount_micro == 0 \
                or abs(amount_micro) > MAX_USD_MICRO:
            raise InvalidInput("amount", amount_micro, "a non-zero amount in USD, e.g. 2.50 or -1.00")
        why = clean_reason(reason, required=True)
        now = self.clock.now()
        day, month = day_of(now, self.tz), month_of(now, self.tz)

        def change(c: Conn, gid: int) -> Diff:
            before = member_credit_month(c, gid, user_id, month)
            insert_ledger(c, kind="credit", guild_id=gid, user_id=user_id, job_id=None,
                          amount_micro=amount_micro, day=day, month=month, actor=actor,
                          reason=why, at=now)
            return ("credit", f"user:{user_id}", f"credit {month}: {micro_to_usd(before)}",
                    f"credit {month}: {micro_to_usd(before + amount_micro)}")

        return await self._act(change, guild_id, actor=actor, reason=why, amount=amount_micro)

    async def refund(self, job_id: int, *, actor: str, reason: str, guild_id: int | None = None) -> Change:
        """Give a settled job's cost back to its member's and guild's limits, once. ``guild_id``
        restricts it to that guild's jobs (a moderator's); the operator may pass None."""
        why = clean_reason(reason, required=True)
        now = self.clock.now()

        def tx(c: Conn) -> Change:
            job = get_job(c, job_id)
            if job is None or (guild_id is not None and job.guild_id != guild_id):
                raise UserFacingError(f"There is no job #{job_id} here.")
            amount = self.quotas.refund_in(c, job_id, actor, why or "", guild_id, now)
            diff = ("refund", f"job:{job_id}", f"settled {micro_to_usd(amount)} (user:{job.user_id})",
                    f"refunded {micro_to_usd(amount)} to user:{job.user_id}")
            # Audited in the job's guild: the operator's refund names no guild of its own.
            return audited(c, job.guild_id, diff, actor=actor, reason=why, now=now, amount=amount)

        return await self.db.run_tx(tx)

    # ---- the guild's budget --------------------------------------------------------------------

    async def set_budget(self, guild_id: int, amount: Limit, *, actor: str, reason: str | None = None
                         ) -> Change:
        """The guild's monthly budget: micro-USD, UNLIMITED, or DEFAULT (limits.guild_monthly_usd)."""
        if amount is KEEP:
            raise InvalidInput("amount", "nothing", USD_ALLOWED)
        column = stored_limit("amount", amount, None)

        def change(c: Conn, gid: int) -> Diff:
            old = get_guild_settings(c, gid)
            # A new budget is measured afresh: its 80% / 100% warnings may come again this month.
            update_guild_settings(c, gid, monthly_budget_micro=column, budget_warned_month=None,
                                  budget_warned_level=0)
            return "budget.set", None, self._budget_text(old.monthly_budget_micro), self._budget_text(column)

        return await self._act(change, guild_id, actor=actor, reason=clean_reason(reason))

    def _budget_text(self, column: int | None) -> str:
        if column is None:
            default = self.cfg.limits.guild_monthly_micro_usd
            return f"default ({'unlimited' if default is None else micro_to_usd(default)})"
        return limit_text(column, True)

    async def check_budget_warnings(self) -> list[BudgetWarning]:
        """For every guild with a log channel: a warning when its spend this month crossed 80% or
        100% of its budget and that level was not announced yet this month (recorded, so each level
        is said once a month). The caller posts them."""
        warnings = []
        for guild_id, channel_id in await self.db.run(guilds_with_log_channel):
            found = await self.quotas.budget_warning(guild_id)
            if found is not None:
                level, spent, budget = found
                warnings.append(BudgetWarning(guild_id, channel_id, level, spent, budget))
        return warnings
