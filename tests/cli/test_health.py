"""`klingbot health` in a subprocess on a real database file. Every live bot run on this host is judged
by its own last finished poll round (``polled_at``, or its start before the first), so one stuck
process shows beside a fresh one; another host's runs only with --all-hosts; a run whose lease lapsed,
that ended, or whose process is gone does not count. The runs are recorded as the engine records them
(tests/services/test_engine_loops.py has a real engine whose poll loop stalls)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from itertools import count

import pytest

from bot.db import open_database
from bot.db.runs import end_run, record_poll_round, register_run
from bot.services.ownership import HOST
from tests.fakes.processes import cli

OTHER = "other-host.invalid"
_runs = count()


class Store:
    """The bot's SQLite file at the path the config names, with runs written into it."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.db_path = tmp_path / "data" / "bot.sqlite3"
        (tmp_path / "config.toml").write_text(f'[storage]\npath = "{self.db_path.as_posix()}"\n')
        self.db = None

    async def open(self) -> None:
        self.db = await open_database(self.db_path)

    async def run(self, pid: int, *, host: str = HOST, kind: str = "discord", started: float = 0.0,
                  polled: float | None = None, lease: float = 30.0) -> str:
        """A run that started ``started`` s ago, finished its last poll round ``polled`` s ago (None:
        none yet) and holds its lease for ``lease`` s more (negative: lapsed)."""
        now = time.time()
        run_id = f"{host}:{pid}:{next(_runs)}"
        await register_run(self.db, run_id=run_id, kind=kind, host=host, pid=pid, now=now - started,
                           lease_until=now + lease)
        if polled is not None:
            await record_poll_round(self.db, run_id, now - polled)
        return run_id

    async def health(self, *args: str) -> tuple[int, list[str]]:
        code, out, _ = await cli(self.tmp_path, "health", *args)
        return code, out.strip().splitlines()

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None


@pytest.fixture
async def store(tmp_path):
    s = Store(tmp_path)
    yield s
    await s.close()


def age_in(line: str) -> int:
    return int(re.search(r" (\d+)(?:\.\d+)? s ago", line).group(1))


NO_RUN_HERE = f"unhealthy: no live bot run on this host ({HOST}) (is `klingbot run` running?)"


async def test_health_without_database_fails_and_creates_none(store):
    code, lines = await store.health()
    assert (code, lines) == (1, [f"unhealthy: no database at {store.db_path}"])
    assert not store.db_path.exists() and not store.db_path.parent.exists()


async def test_health_follows_the_bot_runs_last_poll_round(store):
    await store.open()
    assert await store.health() == (1, [NO_RUN_HERE])
    await store.run(os.getpid(), kind="terminal", polled=0)  # `klingbot generate`: not the bot
    assert await store.health() == (1, [NO_RUN_HERE])

    await store.run(os.getpid(), started=200, polled=95)  # the bot's poll loop stopped 95 s ago
    code, [line] = await store.health("--max-age", "60")
    assert code == 1
    assert line.startswith(f"unhealthy: bot run pid {os.getpid()} on {HOST}: last poll round finished "), line
    assert line.endswith("s ago (allowed 60 s)"), line
    assert 95 <= age_in(line) < 155, line  # the subprocess's own start-up time adds a little
    code, [line] = await store.health("--max-age", "600")
    assert code == 0 and line.startswith(f"healthy: 1 bot run on host {HOST}, last poll round "), line
    assert line.endswith("s ago (allowed 600 s)"), line


async def test_health_default_allowance_is_at_least_30s_and_counts_from_the_start(store):
    await store.open()
    # 20 s old: healthy under the default allowance (3 x 3 s + 30 s), with slack for the subprocess.
    await store.run(os.getpid(), started=600, polled=20)
    code, [line] = await store.health()
    assert code == 0 and line.endswith("(allowed 39 s)"), line
    # A run that never finished a poll round is judged from its start.
    await store.run(os.getppid(), started=3600)
    code, [line] = await store.health()
    assert code == 1
    assert line.startswith(f"unhealthy: bot run pid {os.getppid()} on {HOST}: no poll round finished since it "
                           "started "), line
    assert 3600 <= age_in(line) < 3660, line


async def test_one_stuck_run_beside_a_fresh_one_is_named(store):
    """Two bot processes on one database: the fresh one does not mask the stuck one."""
    await store.open()
    fresh, stuck = os.getpid(), os.getppid()  # two processes alive on this host
    await store.run(fresh, started=900, polled=0.5)
    await store.run(stuck, started=900, polled=500)
    code, lines = await store.health()
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"unhealthy: bot run pid {stuck} on {HOST}: last poll round finished "), lines
    assert f"pid {fresh} " not in lines[0]
    code, [line] = await store.health("--max-age", "900")
    assert code == 0 and line.startswith(f"healthy: 2 bot runs on host {HOST}, the oldest last poll round "), line
    assert 500 <= age_in(line) < 560, line


async def test_other_hosts_runs_are_checked_only_with_all_hosts(store):
    await store.open()
    await store.run(4242, host=OTHER, polled=1)
    code, lines = await store.health()
    assert (code, lines) == (1, [f"unhealthy: no live bot run on this host ({HOST}); 1 on other hosts "
                                 "(--all-hosts checks those)"])
    code, [line] = await store.health("--all-hosts")
    assert code == 0 and line.startswith("healthy: 1 bot run on 1 host, "), line

    await store.run(os.getpid(), polled=1)
    await store.run(4343, host=OTHER, started=900, polled=800)  # stuck, on the other host
    code, [line] = await store.health()
    assert code == 0 and line.startswith(f"healthy: 1 bot run on host {HOST}, "), line
    code, lines = await store.health("--all-hosts")
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"unhealthy: bot run pid 4343 on {OTHER}: "), lines


async def test_runs_whose_lease_lapsed_that_ended_or_whose_process_is_gone_do_not_count(store):
    await store.open()
    await store.run(os.getpid(), polled=0, lease=-1)  # its lease lapsed: the run is gone
    ended = await store.run(os.getppid(), polled=0)
    await end_run(store.db, ended)  # stopped cleanly
    assert await store.health() == (1, [NO_RUN_HERE])

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    await store.run(int(gone.stdout), polled=0)  # killed on this host, its lease not lapsed yet
    assert await store.health() == (1, [NO_RUN_HERE])
    assert (await store.health("--all-hosts"))[1] == ["unhealthy: no live bot run on any host "
                                                      "(is `klingbot run` running?)"]
