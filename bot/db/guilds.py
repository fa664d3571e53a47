"""SQL for a guild's settings: limit overrides, settings, generation channels, blocklist, bans."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.db.connection import Conn, query
from bot.db.records import BanRecord, GuildSettings, LimitOverride, MemberLimitRecord, RoleLimitRecord

# ---- limit overrides ------------------------------------------------------------------------


@query
def get_member_limits(c: Conn, guild_id: int, user_id: int) -> LimitOverride | None:
    row = c.fetchone(
        "SELECT * FROM member_limits WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
    )
    return LimitOverride.from_row(row) if row else None


@query
def set_member_limits(c: Conn, guild_id: int, user_id: int, limits: LimitOverride) -> None:
    """Replace the member's overrides (all three columns)."""
    c.execute(
        """INSERT INTO member_limits (guild_id, user_id, daily_videos, monthly_micro, max_concurrent)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (guild_id, user_id) DO UPDATE SET daily_videos = excluded.daily_videos,
               monthly_micro = excluded.monthly_micro, max_concurrent = excluded.max_concurrent""",
        (guild_id, user_id, limits.daily_videos, limits.monthly_micro, limits.max_concurrent),
    )


@query
def delete_member_limits(c: Conn, guild_id: int, user_id: int) -> bool:
    rows = c.fetchall(
        "DELETE FROM member_limits WHERE guild_id = ? AND user_id = ? RETURNING guild_id", (guild_id, user_id)
    )
    return bool(rows)


@query
def list_member_limits(c: Conn, guild_id: int) -> list[MemberLimitRecord]:
    rows = c.fetchall("SELECT * FROM member_limits WHERE guild_id = ? ORDER BY user_id", (guild_id,))
    return [MemberLimitRecord(r["guild_id"], r["user_id"], LimitOverride.from_row(r)) for r in rows]


@query
def role_limits_for(c: Conn, guild_id: int, role_ids: Sequence[int]) -> list[RoleLimitRecord]:
    if not role_ids:
        return []
    marks = ",".join("?" * len(role_ids))
    rows = c.fetchall(
        f"SELECT * FROM role_limits WHERE guild_id = ? AND role_id IN ({marks}) ORDER BY role_id",
        (guild_id, *role_ids),
    )
    return [RoleLimitRecord(r["guild_id"], r["role_id"], LimitOverride.from_row(r)) for r in rows]


@query
def list_role_limits(c: Conn, guild_id: int) -> list[RoleLimitRecord]:
    rows = c.fetchall("SELECT * FROM role_limits WHERE guild_id = ? ORDER BY role_id", (guild_id,))
    return [RoleLimitRecord(r["guild_id"], r["role_id"], LimitOverride.from_row(r)) for r in rows]


@query
def set_role_limits(c: Conn, guild_id: int, role_id: int, limits: LimitOverride) -> None:
    c.execute(
        """INSERT INTO role_limits (guild_id, role_id, daily_videos, monthly_micro, max_concurrent)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (guild_id, role_id) DO UPDATE SET daily_videos = excluded.daily_videos,
               monthly_micro = excluded.monthly_micro, max_concurrent = excluded.max_concurrent""",
        (guild_id, role_id, limits.daily_videos, limits.monthly_micro, limits.max_concurrent),
    )


@query
def delete_role_limits(c: Conn, guild_id: int, role_id: int) -> bool:
    rows = c.fetchall(
        "DELETE FROM role_limits WHERE guild_id = ? AND role_id = ? RETURNING guild_id", (guild_id, role_id)
    )
    return bool(rows)


# ---- guild settings ---------------------------------------------------------------------------

_SETTINGS_COLUMNS = frozenset(
    {"monthly_budget_micro", "paused", "pause_reason", "mod_role_id", "log_channel_id", "gallery_channel_id",
     "safety_mode", "budget_warned_month", "budget_warned_level", "confirm_above_micro"}
)


@query
def get_guild_settings(c: Conn, guild_id: int) -> GuildSettings:
    """The guild's settings; all defaults when it has no row yet."""
    row = c.fetchone("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
    return GuildSettings.from_row(row) if row else GuildSettings(guild_id=guild_id)


@query
def update_guild_settings(c: Conn, guild_id: int, **values: Any) -> GuildSettings:
    """Set some columns (names from GuildSettings), creating the row if needed; returns the new row."""
    unknown = set(values) - _SETTINGS_COLUMNS
    if unknown or not values:
        raise ValueError(f"unknown guild setting(s): {sorted(unknown) or 'none given'}")
    names = sorted(values)  # column names come from the whitelist above, values are parameters
    cols = ", ".join(names)
    marks = ", ".join("?" * len(names))
    updates = ", ".join(f"{n} = excluded.{n}" for n in names)
    params = [int(v) if isinstance(v, bool) else v for v in (values[n] for n in names)]
    row = c.fetchone(
        f"""INSERT INTO guild_settings (guild_id, {cols}) VALUES (?, {marks})
            ON CONFLICT (guild_id) DO UPDATE SET {updates} RETURNING *""",
        (guild_id, *params),
    )
    assert row is not None
    return GuildSettings.from_row(row)


# ---- generation channels and blocklist ---------------------------------------------------------


@query
def list_gen_channels(c: Conn, guild_id: int) -> list[int]:
    rows = c.fetchall("SELECT channel_id FROM gen_channels WHERE guild_id = ? ORDER BY channel_id",
                            (guild_id,))
    return [int(r[0]) for r in rows]


@query
def add_gen_channel(c: Conn, guild_id: int, channel_id: int) -> bool:
    rows = c.fetchall(
        "INSERT INTO gen_channels (guild_id, channel_id) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING 1",
        (guild_id, channel_id),
    )
    return bool(rows)


@query
def remove_gen_channel(c: Conn, guild_id: int, channel_id: int) -> bool:
    rows = c.fetchall(
        "DELETE FROM gen_channels WHERE guild_id = ? AND channel_id = ? RETURNING 1", (guild_id, channel_id)
    )
    return bool(rows)


@query
def list_blocklist(c: Conn, guild_id: int) -> list[str]:
    # lower(): case-insensitive on both stores (SQLite's column is NOCASE, PostgreSQL's index lower(term))
    rows = c.fetchall("SELECT term FROM blocklist WHERE guild_id = ? ORDER BY lower(term)", (guild_id,))
    return [str(r[0]) for r in rows]


@query
def add_blocklist_term(c: Conn, guild_id: int, term: str) -> bool:
    rows = c.fetchall(
        "INSERT INTO blocklist (guild_id, term) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING 1",
        (guild_id, term),
    )
    return bool(rows)


@query
def remove_blocklist_term(c: Conn, guild_id: int, term: str) -> bool:
    rows = c.fetchall(
        "DELETE FROM blocklist WHERE guild_id = ? AND lower(term) = lower(?) RETURNING 1", (guild_id, term)
    )
    return bool(rows)


# ---- bans -----------------------------------------------------------------------------------


@query
def get_ban(c: Conn, guild_id: int, user_id: int) -> BanRecord | None:
    row = c.fetchone("SELECT * FROM bans WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
    return BanRecord.from_row(row) if row else None


@query
def add_ban(
    c: Conn, guild_id: int, user_id: int, reason: str | None, actor: str, at: float
) -> None:
    c.execute(
        """INSERT INTO bans (guild_id, user_id, reason, actor, at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (guild_id, user_id) DO UPDATE SET reason = excluded.reason,
               actor = excluded.actor, at = excluded.at""",
        (guild_id, user_id, reason, actor, at),
    )


@query
def remove_ban(c: Conn, guild_id: int, user_id: int) -> bool:
    rows = c.fetchall(
        "DELETE FROM bans WHERE guild_id = ? AND user_id = ? RETURNING 1", (guild_id, user_id)
    )
    return bool(rows)


@query
def list_bans(c: Conn, guild_id: int) -> list[BanRecord]:
    rows = c.fetchall("SELECT * FROM bans WHERE guild_id = ? ORDER BY at", (guild_id,))
    return [BanRecord.from_row(r) for r in rows]


@query
def guilds_with_log_channel(c: Conn) -> list[tuple[int, int]]:
    """(guild id, log channel id) of every guild that set a log channel."""
    rows = c.fetchall(
        "SELECT guild_id, log_channel_id FROM guild_settings WHERE log_channel_id IS NOT NULL "
        "ORDER BY guild_id"
    )
    return [(int(r[0]), int(r[1])) for r in rows]
