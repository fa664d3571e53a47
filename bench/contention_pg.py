"""contention-pg: the contention scenario on PostgreSQL (SPEC 6): 1,000 concurrent reservations by 200
members from 4 processes, each with its own connection, released together, on one database of a
throw-away server (initdb + pg_ctl on a free loopback port, as the tests start it).

On PostgreSQL the reserve serialises on advisory locks (the bot-wide day, the guild, the member:
bot.db.money.lock_spend) instead of SQLite's one write lock; "0 overspend" is checked against the
ledger as in contention, and exactly as many are admitted as the tightest limit allows."""

from __future__ import annotations

from pathlib import Path

from bench import contention
from bench.common import ScenarioResult
from tests.fakes.postgres import PostgresServer, unavailable_reason

NAME = "contention-pg"


async def run(tmp: Path, *, quick: bool = False, total: int | None = None, members: int | None = None,
              processes: int = 4, url: str | None = None) -> ScenarioResult:
    """``url``: an empty database on a running server (the tests'); else a server is started here."""
    result = ScenarioResult(NAME)
    reason = None if url else unavailable_reason()
    if reason:
        result.add("skipped", reason, "", "a PostgreSQL server", False)
        return result
    total = total or (200 if quick else 1000)
    members = members or (40 if quick else 200)
    spec = contention.plan(total, members, guilds=4)
    expected = min(spec["caps"]["global"], spec["caps"]["guild"] * 4, spec["caps"]["member"] * members)
    if url:
        many = await contention.multi_process(tmp, spec, processes, location=url)
    else:
        with PostgresServer() as server:
            many = await contention.multi_process(tmp, spec, processes, location=server.create_database("bench"))
    rate = total / (many["ended"] - many["started"])
    result.add(f"overspend ({processes} processes)", many["overspend_micro"], "micro-USD", "0",
               many["overspend_micro"] == 0 and not many["errors"])
    result.add("admitted = what the limits allow", f"{many['admitted']} of {expected}", "", f"{expected}",
               many["admitted"] == expected)
    result.add(f"reservations/s, {processes} processes", rate, "/s")
    result.details = {"attempts": total, "members": members, "guilds": 4, "caps": spec["caps"],
                      "limits": spec["limits"], "expected_admitted": expected,
                      "multi_process": many | {"rate_per_s": round(rate, 1)},
                      "measure": "wall time from the first create() to the last answer (admitted or "
                                 "refused) across the processes, all released together"}
    return result
