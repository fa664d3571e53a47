"""The command line on PostgreSQL (KLINGBOT_DATABASE_URL), in real processes: concurrent `generate`
runs admit exactly the limit; the operator's commands work on the server (`health` checks this host's
bot runs, every host's with --all-hosts); `backup` points at pg_dump; the URL's password never shows."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from bot.db import Conn, open_database
from bot.db.money import ledger_rows
from bot.db.runs import record_poll_round, register_run
from bot.services.ownership import HOST
from tests.fakes.processes import cli, cli_env, last_json, simulator_process

PASSWORD = "pw-4f1c9e2b"  # the test server trusts loopback, so the password is carried and never asked for


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


def test_concurrent_generate_processes_on_one_postgres_admit_exactly_the_limit(tmp_path, pg_url):
    # A limit of one: the admitted run's job is then the only one in flight, so no other run can
    # pick it up (which run delivers a job when several are in flight is the engine's ownership).
    url = with_password(pg_url)
    with simulator_process("k-pg") as port:
        (tmp_path / "config.toml").write_text(
            f'[runware]\napi_url = "http://127.0.0.1:{port}/v1"\ndownload_hosts = ["127.0.0.1"]\n'
            "first_poll_after_s = 0.2\npoll_interval_s = 0.2\n"
            '[limits]\ndaily_videos = 1\nmax_concurrent = "unlimited"\n'
        )
        env = cli_env(RUNWARE_API_KEY="k-pg", KLINGBOT_DATABASE_URL=url)
        runs = [
            subprocess.Popen([sys.executable, "-m", "bot", "generate", "--json", f"a lighthouse, take {i}",
                              "--out", str(tmp_path / f"out{i}")],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(6)
        ]
        outcomes = []
        for run in runs:
            out, err = run.communicate(timeout=180)
            outcomes.append((run.returncode, out, err))
    codes = Counter(code for code, _, _ in outcomes)
    assert codes == {0: 1, 3: 5}, outcomes
    for code, out, err in outcomes:
        assert PASSWORD not in out + err
        line = last_json(out)
        if code == 0:
            assert line["status"] == "delivered" and len(line["videos"]) == 1
        else:
            assert line["status"] == "refused" and "daily" in err.lower()
    assert not (tmp_path / "data").exists()  # no SQLite file beside: everything went to the server

    async def ledger() -> Counter:
        db = await open_database(pg_url)
        try:
            return Counter(row.kind for row in await ledger_rows(db))
        finally:
            await db.close()

    assert asyncio.run(ledger()) == {"reserve": 1, "settle": 1}


async def _bot_run(url: str, run_id: str, host: str, pid: int, polled_ago: float) -> None:
    """A live bot run, as the engine records it, that finished a poll round ``polled_ago`` s ago."""
    db = await open_database(url)
    try:
        now = time.time()
        await register_run(db, run_id=run_id, kind="discord", host=host, pid=pid, now=now - 900, lease_until=now + 30)
        await record_poll_round(db, run_id, now - polled_ago)
    finally:
        await db.close()


async def test_operator_commands_on_postgres(tmp_path, pg_url):
    (tmp_path / "config.toml").write_text('[limits]\ndaily_videos = "unlimited"\n')
    env = {"KLINGBOT_DATABASE_URL": with_password(pg_url)}
    seen = ""

    code, out, err = await cli(tmp_path, "health", env_extra=env)  # migrates; no bot run yet
    seen += out + err
    assert code == 1 and out.startswith("unhealthy: no live bot run on this host"), out
    await _bot_run(pg_url, "here", HOST, os.getpid(), polled_ago=0.5)
    await _bot_run(pg_url, "there", "monitored-host.invalid", 4242, polled_ago=600)  # another bot's host
    code, out, err = await cli(tmp_path, "health", env_extra=env)
    seen += out + err
    assert code == 0 and out.startswith(f"healthy: 1 bot run on host {HOST}"), out
    code, out, err = await cli(tmp_path, "health", "--all-hosts", env_extra=env)
    seen += out + err
    assert code == 1 and out.startswith("unhealthy: bot run pid 4242 on monitored-host.invalid: "), out

    code, out, err = await cli(tmp_path, "quota", "set", "--guild", "7", "--user", "100", "--monthly-usd", "2.50",
                               "--reason", "vip", env_extra=env)
    seen += out + err
    assert code == 0, err
    code, out, err = await cli(tmp_path, "quota", "credit", "--guild", "7", "--user", "100", "--amount", "1",
                               "--reason", "thanks", env_extra=env)
    seen += out + err
    assert code == 0, err
    code, out, err = await cli(tmp_path, "quota", "show", "--guild", "7", "--user", "100", env_extra=env)
    seen += out + err
    assert code == 0, err
    assert "$0.00 spent of $3.50 ($2.50 + $1.00 credit), $3.50 left" in out

    code, out, err = await cli(tmp_path, "usage", "--period", "all", "--csv", str(tmp_path / "u.csv"),
                               env_extra=env)
    seen += out + err
    assert code == 0, err
    code, out, err = await cli(tmp_path, "jobs", env_extra=env)
    seen += out + err
    assert code == 0, err

    code, out, err = await cli(tmp_path, "backup", str(tmp_path / "copy.sqlite3"), env_extra=env)
    seen += out + err
    assert code == 1 and "pg_dump" in err
    assert not (tmp_path / "copy.sqlite3").exists()
    assert not (tmp_path / "data").exists()  # nothing fell back to a SQLite file
    assert PASSWORD not in seen

    db = await open_database(pg_url)
    try:
        rows = await db.run(Conn.fetchall, "SELECT action, target FROM audit ORDER BY id")
        assert [(r["action"], r["target"]) for r in rows] == [("quota.set", "user:100"), ("credit", "user:100")]
    finally:
        await db.close()


@pytest.mark.parametrize("bad", ["mysql://root@localhost/db", "data/klingbot.sqlite3"])
async def test_a_storage_url_that_is_not_postgresql_is_refused_without_echoing_it(tmp_path, bad):
    (tmp_path / "config.toml").write_text(f'[storage]\nurl = "{bad}"\n')
    code, out, err = await cli(tmp_path, "jobs")
    assert code != 0
    assert "storage.url" in err and "postgresql://" in err
    assert bad not in out + err


def test_an_unreachable_postgres_is_a_clear_error_without_the_password(tmp_path, pg_url):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host_port = pg_url.split("@", 1)[1].split("/", 1)[0]
    url = with_password(pg_url).replace(host_port, f"127.0.0.1:{port}")
    proc = subprocess.run([sys.executable, "-m", "bot", "jobs"], cwd=tmp_path,
                          env=cli_env(KLINGBOT_DATABASE_URL=url), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert PASSWORD not in proc.stdout + proc.stderr
    assert "database server is not answering" in proc.stderr and "Traceback" not in proc.stderr
