"""Helper process for the multi-process tests (run by tests/test_quotas.py and tests/test_jobs.py).

    python tests/quota_worker.py DB_PATH SPEC_JSON

mode "reserve": opens its own connection, prints "ready", waits for a line on stdin (the start
barrier: the parent releases every worker at once), fires ``count`` reservations concurrently, and
prints one JSON line: {"admitted": [job ids], "refused": {limit: n}, "errors": [...]}.

mode "create-one": creates one job and finishes it as the spec says; with KLINGBOT_FAILPOINT set the
process kills itself at that point (crash tests).

mode "refund": a moderator's refund of job ``job_id``, after the same barrier; prints
{"refunded": micro-USD} or {"refused": the message the moderator sees}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import zoneinfo
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import Config, LimitsConfig  # noqa: E402
from bot.db import open_database  # noqa: E402
from bot.errors import LimitExceeded, UserFacingError  # noqa: E402
from bot.services.clock import FixedClock  # noqa: E402
from bot.services.jobs import JobStore  # noqa: E402
from bot.services.moderation import Moderation  # noqa: E402
from bot.services.quotas import Member, Quotas  # noqa: E402


async def main(db_path: str, spec: dict) -> None:
    db = await open_database(db_path)
    clock = FixedClock(spec["now"])
    tz = zoneinfo.ZoneInfo(spec.get("tz", "UTC"))
    store = JobStore(db, Quotas(db, LimitsConfig.model_validate(spec["limits"]), tz, clock), clock, tz)
    member = Member(spec["guild_id"], spec["user_id"])
    try:
        if spec["mode"] == "create-one":
            job = await store.create(
                member, channel_id=1, model_key="kling-2.5-turbo-pro", params={}, task_uuid=spec["task_uuid"],
                duration_s=5, variations=1, estimate_micro=spec["estimate_micro"],
            )
            if spec.get("finish"):
                await store.finish(job.id, "succeeded", None, spec["finish"])
            print(json.dumps({"job_id": job.id}), flush=True)
            return

        print("ready", flush=True)
        sys.stdin.readline()  # the barrier

        if spec["mode"] == "refund":
            mod = Moderation(db, Config(), clock)
            try:
                change = await mod.refund(spec["job_id"], actor=spec["actor"], reason="two moderators at once",
                                          guild_id=spec["guild_id"])
                print(json.dumps({"refunded": change.amount_micro}), flush=True)
            except UserFacingError as exc:
                print(json.dumps({"refused": exc.message}), flush=True)
            return

        async def one(i: int) -> int | str:
            try:
                job = await store.create(
                    member, channel_id=1, model_key="kling-2.5-turbo-pro", params={"i": i},
                    task_uuid=f"{os.getpid()}-{i}", duration_s=5, variations=1,
                    estimate_micro=spec["estimate_micro"],
                )
                return job.id
            except LimitExceeded as exc:
                return exc.limit

        outcomes = await asyncio.gather(*(one(i) for i in range(spec["count"])), return_exceptions=True)
        result = {
            "admitted": [o for o in outcomes if isinstance(o, int)],
            "refused": dict(Counter(o for o in outcomes if isinstance(o, str))),
            "errors": [repr(o) for o in outcomes if isinstance(o, BaseException)],
        }
        print(json.dumps(result), flush=True)
    finally:
        await db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
