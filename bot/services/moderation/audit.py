"""The audited action every moderator and operator change goes through: validate, write and append
the audit row (who, what, target, before, after, reason, when) in ONE ``BEGIN IMMEDIATE``
transaction, so there is never a change without its audit row nor an audit row for a change that
did not happen. Also reading the trail back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.config import Config
from bot.db import Conn, Database
from bot.db.audit import insert_audit, list_audit
from bot.db.guilds import get_guild_settings
from bot.db.records import AuditRecord
from bot.errors import InvalidInput
from bot.services.clock import Clock
from bot.services.quotas import Quotas

# A moderator action's effect, as audited: (action, target, before, after).
Diff = tuple[str, str | None, str | None, str | None]

MAX_REASON = 500
AUDIT_MAX = 100


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


def clean_reason(reason: str | None, *, required: bool = False) -> str | None:
    text = (reason or "").strip()
    if required and not text:
        raise InvalidInput("reason", reason or "", "a short reason (it goes to the audit log)")
    if len(text) > MAX_REASON:
        raise InvalidInput("reason", text, f"at most {MAX_REASON} characters",
                           problem=f"is {len(text)} characters long")
    return text or None


def audited(c: Conn, guild_id: int, diff: Diff, *, actor: str, reason: str | None, now: float,
            amount: int | None = None) -> Change:
    """Append the audit row of ``diff`` (inside the change's own transaction)."""
    action, target, before, after = diff
    audit_id = insert_audit(c, guild_id=guild_id, actor=actor, action=action, target=target,
                            before=before, after=after, reason=reason, at=now)
    log_channel = get_guild_settings(c, guild_id).log_channel_id
    return Change(audit_id, guild_id, actor, action, target, before, after, reason, now, log_channel, amount)


class AuditedActions:
    """What every group of actions shares: the database, the config, the clock, the quotas, and
    ``_act``, the one transaction an action runs in."""

    def __init__(self, db: Database, cfg: Config, clock: Clock | None = None) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock or Clock()
        self.tz = cfg.progress.tz
        self.quotas = Quotas(db, cfg.limits, self.tz, self.clock, cfg.premium)

    async def _act(self, fn: Callable[[Conn, int], Diff], guild_id: int, *, actor: str, reason: str | None,
                   amount: int | None = None) -> Change:
        """``fn(c, guild_id)`` validates and writes, returning (action, target, before, after); its
        audit row goes in the same transaction. Raising in ``fn`` rolls everything back."""
        now = self.clock.now()

        def tx(c: Conn) -> Change:
            return audited(c, guild_id, fn(c, guild_id), actor=actor, reason=reason, now=now, amount=amount)

        return await self.db.run_tx(tx)

    async def audit(self, guild_id: int, count: int = 10) -> list[AuditRecord]:
        """The guild's latest audit rows, newest first."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= AUDIT_MAX:
            raise InvalidInput("count", count, f"a whole number from 1 to {AUDIT_MAX}")
        return await self.db.run(list_audit, guild_id, count)

    async def record(self, guild_id: int, action: str, *, actor: str, target: str | None = None,
                     after: str | None = None, reason: str | None = None) -> Change:
        """Audit an action that changes nothing (e.g. a usage export)."""
        def change(c: Conn, gid: int) -> Diff:
            return action, target, None, after

        return await self._act(change, guild_id, actor=actor, reason=reason)
