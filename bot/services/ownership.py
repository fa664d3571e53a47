"""Which process shows and delivers a job (SPEC 2.1): each engine is a run with a lease (bot/db/runs);
a job belongs to one run, its creator until another takes it over; a job whose run is gone (its
lease lapsed, it ended, or its process on this host is dead) is taken over by the next engine whose
sink shows such jobs. Submitting and polling stay anyone's: Runware's taskUUID and the job's state
make those safe to share; what a member or a terminal user sees is not."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from bot.db import runs
from bot.db.connection import Database
from bot.db.records import JobRecord
from bot.services.clock import Clock

log = logging.getLogger(__name__)

LEASE_S = 30.0        # a run killed with -9 on another host loses its jobs after this long
RENEW_EVERY_S = 10.0  # the lease is renewed this often (three tries before it lapses)
PRUNE_AFTER_S = 7 * 86400.0
HOST = socket.gethostname()
BOT_KIND = "discord"  # the Discord bot's runs: the ones `klingbot health` checks


def process_gone(host: str, pid: int) -> bool:
    """True only when ``pid`` on this host is certainly dead (another host's processes: unknown)."""
    if host != HOST or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


class Ownership:
    def __init__(self, db: Database, clock: Clock, run_id: str, *, kind: str, deliver_to: str | None = None
                 ) -> None:
        self.db = db
        self.clock = clock
        self.run_id = run_id
        self.kind = kind
        self.deliver_to = deliver_to

    def owns(self, job: JobRecord) -> bool:
        return job.owned_by == self.run_id

    async def start(self) -> None:
        now = self.clock.now()
        await runs.register_run(self.db, run_id=self.run_id, kind=self.kind, host=HOST, pid=os.getpid(), now=now,
                                lease_until=now + LEASE_S, deliver_to=self.deliver_to)
        await runs.prune_runs(self.db, now - PRUNE_AFTER_S)

    async def renew(self) -> None:
        now = self.clock.now()
        if not await runs.renew_run(self.db, self.run_id, now + LEASE_S):
            # Ended (a stop in progress) or pruned: register again; jobs taken over meanwhile stay taken.
            await self.start()

    async def end(self) -> None:
        """Give up the lease at once: the next engine takes the unfinished jobs over without waiting."""
        await runs.end_run(self.db, self.run_id)

    async def adopt(self, shows: Callable[[JobRecord], bool]) -> list[int]:
        """Take over the orphaned jobs that ``shows`` (the sink) can show; returns their ids."""
        now = self.clock.now()
        for run in await runs.live_runs(self.db, now):
            if run.run_id != self.run_id and process_gone(run.host, run.pid):
                log.info("run %s (pid %s) is gone; its jobs can be taken over", run.run_id, run.pid)
                await runs.end_run(self.db, run.run_id)
        wanted = [job.id for job in await runs.orphaned_jobs(self.db, now) if shows(job)]
        if not wanted:
            return []
        taken = await self.db.run_tx(runs.take_over, wanted, self.run_id, now)
        if taken:
            log.info("took over %d job(s) whose process is gone: %s", len(taken), taken)
        return taken
