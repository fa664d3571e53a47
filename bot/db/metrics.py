"""SQL behind the metrics (SPEC 2.4): the gauges read at each scrape, and what a delivered result's
post delay is measured from. Aggregates over indexed columns only: a scrape must stay cheap."""

from __future__ import annotations

from dataclasses import dataclass

from bot.db.connection import Conn, query


@dataclass(frozen=True)
class GaugeCounts:
    queued: int          # waiting in the fair queue
    at_runware: int      # submitted or processing
    runware_paused: bool  # generation paused bot-wide (Runware refused the key or the balance)
    guilds_paused: int   # guilds a moderator paused


@query
def gauge_counts(c: Conn, runware_pause_key: str) -> GaugeCounts:
    by_state = dict(c.fetchall(
        "SELECT state, COUNT(*) FROM jobs WHERE state IN ('queued', 'submitted', 'processing') GROUP BY state"
    ))
    paused = c.fetchval("SELECT COUNT(*) FROM kv WHERE key = ?", (runware_pause_key,), default=0)
    guilds = c.fetchval("SELECT COUNT(*) FROM guild_settings WHERE paused = 1", default=0)
    return GaugeCounts(
        queued=int(by_state.get("queued", 0)),
        at_runware=int(by_state.get("submitted", 0)) + int(by_state.get("processing", 0)),
        runware_paused=bool(paused),
        guilds_paused=int(guilds),
    )


@query
def delivered_result_facts(c: Conn, result_id: int) -> tuple[str, float, float] | None:
    """(model key, fetched at, delivered at) of a delivered result: the row is written when the
    poller fetches the result, ``delivered_at`` when its message is out."""
    row = c.fetchone(
        """SELECT j.model_key, r.created_at, r.delivered_at FROM results r JOIN jobs j ON j.id = r.job_id
           WHERE r.id = ? AND r.delivered_at IS NOT NULL""",
        (result_id,),
    )
    return None if row is None else (row[0], float(row[1]), float(row[2]))
