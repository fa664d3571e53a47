"""Typed rows: what the query functions return. Frozen; built from sqlite3.Row by ``from_row``."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, fields
from typing import Any

ACTIVE_STATES: tuple[str, ...] = ("queued", "submitted", "processing")
AT_RUNWARE_STATES: tuple[str, ...] = ("submitted", "processing")
FINAL_STATES: tuple[str, ...] = ("succeeded", "failed", "timed_out", "cancelled")
ALL_STATES: tuple[str, ...] = ACTIVE_STATES + FINAL_STATES
UNLIMITED = -1  # stored in an override column: "no limit"


def _columns(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    guild_id: int
    channel_id: int
    user_id: int
    model_key: str
    params: dict[str, Any]
    task_uuid: str
    image_uuids: dict[str, str]
    duration_s: int
    variations: int
    estimate_micro: int
    state: str
    error: str | None
    failed_variations: int
    cancel_requested: bool
    cancelled_by: str | None
    created_at: float
    day: str
    month: str
    claimed_by: str | None
    claimed_at: float | None
    submitted_at: float | None
    finished_at: float | None
    notified_at: float | None
    next_poll_at: float | None
    last_polled_at: float | None
    progress_message_id: int | None
    result_message_id: int | None
    upload_limit: int | None
    parent_job_id: int | None
    created_by: str | None = None  # "host:pid:run" of the process that created it (migration 002)
    submit_sent_at: float | None = None  # the bot began sending it: Runware may have it (migration 006)
    owner: str | None = None       # the run that shows and delivers it, when not its creator (006)
    deliver_to: str | None = None  # a terminal job's --out (006)
    # Runware's prompt enhancer (009; bot/services/enhance.py has the money rule)
    enhance_reserve_micro: int | None = None  # its share of estimate_micro; None: not enhanced
    enhance_sent_at: float | None = None      # a call is out and unanswered (NULL again once refused)
    enhance_resent: bool = False              # a call went out while an earlier one was unanswered
    enhanced_prompt: str | None = None
    enhance_cost_micro: int | None = None     # what Runware reported for it

    @property
    def owned_by(self) -> str | None:
        """The run that shows and delivers this job: its owner, else its creator."""
        return self.owner or self.created_by

    @property
    def video_estimate_micro(self) -> int:
        """The videos' part of the reserve (the estimate without the enhancement's share)."""
        return self.estimate_micro - (self.enhance_reserve_micro or 0)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def may_be_at_runware(self) -> bool:
        """Sent (acknowledged or not): Runware may run and bill it, whatever happens here."""
        return self.submit_sent_at is not None or self.submitted_at is not None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        data = {name: row[name] for name in _columns(cls)}
        data["params"] = json.loads(data["params"] or "{}")
        data["image_uuids"] = json.loads(data["image_uuids"] or "{}")
        data["cancel_requested"] = bool(data["cancel_requested"])
        data["enhance_resent"] = bool(data["enhance_resent"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ResultRecord:
    id: int
    job_id: int
    video_uuid: str
    video_url: str | None
    seed: int | None
    cost_micro: int | None
    nsfw: bool
    created_at: float
    delivered_at: float | None
    local_path: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ResultRecord:
        data = {name: row[name] for name in _columns(cls)}
        data["nsfw"] = bool(data["nsfw"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    id: int
    at: float
    kind: str
    guild_id: int
    user_id: int
    job_id: int | None
    amount_micro: int
    effect_micro: int  # what the row changes in the spend counted against limits
    day: str
    month: str
    actor: str
    reason: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> LedgerRecord:
        return cls(**{name: row[name] for name in _columns(cls)})


@dataclass(frozen=True, slots=True)
class JobMoney:
    """A job's ledger in one line: what was reserved, settled, released and refunded (micro-USD).
    ``settled``/``released``/``refunded`` are None when that row does not exist."""

    reserved: int
    settled: int | None
    released: int | None
    refunded: int | None

    @property
    def finalized(self) -> bool:
        """Settled or released."""
        return self.settled is not None or self.released is not None

    @property
    def counted(self) -> int:
        """What the job counts against limits now: settled cost, 0 if released, else the reserve."""
        if self.settled is not None:
            return self.settled
        return 0 if self.released is not None else self.reserved


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """A member's or a role's overrides. None = not overridden; -1 (UNLIMITED) = no limit."""

    daily_videos: int | None = None
    monthly_micro: int | None = None
    max_concurrent: int | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> LimitOverride:
        return cls(row["daily_videos"], row["monthly_micro"], row["max_concurrent"])


@dataclass(frozen=True, slots=True)
class RoleLimitRecord:
    guild_id: int
    role_id: int
    limits: LimitOverride


@dataclass(frozen=True, slots=True)
class MemberLimitRecord:
    guild_id: int
    user_id: int
    limits: LimitOverride


@dataclass(frozen=True, slots=True)
class GuildSettings:
    guild_id: int
    monthly_budget_micro: int | None = None  # None = config default, -1 = unlimited
    paused: bool = False
    pause_reason: str | None = None
    mod_role_id: int | None = None
    log_channel_id: int | None = None
    gallery_channel_id: int | None = None  # where Share posts results (migration 008); None = no gallery
    safety_mode: str | None = None  # None = runware.safety_mode
    confirm_above_micro: int | None = None  # None = limits.confirm_above_usd; 0 = never ask
    budget_warned_month: str | None = None
    budget_warned_level: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> GuildSettings:
        data = {name: row[name] for name in _columns(cls)}
        data["paused"] = bool(data["paused"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class GalleryPost:
    """A job shared to its guild's gallery (migration 008): claimed before the post is sent, with its
    message id once Discord's answer is recorded."""

    job_id: int
    guild_id: int
    channel_id: int
    message_id: int | None  # None: claimed, the post not known to have reached Discord
    replaced_message_id: int | None  # a deleted gallery post this one stands in for
    shared_by: int
    shared_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> GalleryPost:
        return cls(**{name: row[name] for name in _columns(cls)})


@dataclass(frozen=True, slots=True)
class BanRecord:
    guild_id: int
    user_id: int
    reason: str | None
    actor: str
    at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> BanRecord:
        return cls(**{name: row[name] for name in _columns(cls)})


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: float
    guild_id: int
    actor: str
    action: str
    target: str | None
    before: str | None
    after: str | None
    reason: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AuditRecord:
        return cls(**{name: row[name] for name in _columns(cls)})


@dataclass(frozen=True, slots=True)
class SpendNumbers:
    """Everything a reservation check reads, in one query (micro-USD unless a count)."""

    videos_today: int  # variations of the member's jobs today that were not released
    member_spent_month: int  # counted spend minus refunds
    member_credit_month: int
    member_in_flight: int  # queued / submitted / processing, a cancel asked for included
    member_pending_month: int  # reserves not yet settled or released
    guild_spent_month: int  # counted spend minus refunds
    global_spent_day: int  # counted spend; refunds still count

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SpendNumbers:
        return cls(**{name: int(row[name] or 0) for name in _columns(cls)})



@dataclass(frozen=True, slots=True)
class RunRecord:
    """One engine process (migration 006): alive while ``lease_until`` is in the future. ``polled_at``:
    when it last finished a poll round, None before its first (migration 007)."""

    run_id: str
    kind: str
    host: str
    pid: int
    started_at: float
    lease_until: float
    deliver_to: str | None
    polled_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        return cls(**{name: row[name] for name in _columns(cls)})
