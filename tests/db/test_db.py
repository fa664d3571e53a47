"""The database layer on both stores (``store``: a SQLite file, then a PostgreSQL database):
migrations, transactions on a shared connection, and the guarantees the schema itself enforces
(append-only ledger, exactly-once money rows)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from bot.db import Conn, IntegrityError, MigrationError, open_database
from bot.db.connection import load_migrations
from bot.db.guilds import (
    add_blocklist_term,
    get_guild_settings,
    list_blocklist,
    remove_blocklist_term,
    update_guild_settings,
)
from bot.db.jobs import insert_job, insert_result
from bot.db.kv import kv_get, kv_set
from bot.db.money import insert_ledger, ledger_for_job
from bot.db.runs import live_runs, record_poll_round, register_run
from tests.db.migrations import migrations_before

TABLES = {"jobs", "results", "ledger", "member_limits", "role_limits", "guild_settings", "gen_channels",
          "blocklist", "bans", "audit", "kv", "runs", "gallery_posts"}
ENHANCE_COLUMNS = {"enhance_reserve_micro", "enhance_sent_at", "enhance_resent", "enhanced_prompt",
                   "enhance_cost_micro"}  # 009
GONE = {"heartbeat"}  # dropped by 007: each run records its own poll rounds


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path))


async def test_empty_database_migrates_to_latest(tmp_path):
    path = tmp_path / "nested" / "dir" / "bot.sqlite3"  # parent directories are created
    db = await open_database(path)
    latest = load_migrations()[-1].version
    assert await db.user_version() == latest >= 1
    rows = await db.run(Conn.fetchall, "SELECT name FROM sqlite_master WHERE type = 'table'")
    tables = {r[0] for r in rows}
    assert TABLES <= tables and not GONE & tables
    columns = {r["name"] for r in await db.run(Conn.fetchall, "PRAGMA table_info(runs)")}
    assert "polled_at" in columns
    columns = {r["name"] for r in await db.run(Conn.fetchall, "PRAGMA table_info(jobs)")}
    assert ENHANCE_COLUMNS <= columns
    assert (await db.run(Conn.fetchval, "PRAGMA journal_mode")).lower() == "wal"
    assert await db.run(Conn.fetchval, "PRAGMA foreign_keys") == 1
    assert await db.run(Conn.fetchval, "PRAGMA busy_timeout") >= 5000
    await db.close()


async def test_reopening_is_a_no_op(tmp_path):
    path = tmp_path / "bot.sqlite3"
    db = await open_database(path)
    await db.run(kv_set, "command_hash", "abc")
    await db.close()
    # 001 has plain CREATE TABLEs: running it again would fail, so a clean reopen proves it was skipped.
    db = await open_database(path)
    assert await db.user_version() == load_migrations()[-1].version
    assert await db.run(kv_get, "command_hash") == "abc"
    await db.close()


def _migrations_dir(tmp_path: Path, second: str) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir(exist_ok=True)
    shipped = Path(__file__).resolve().parents[2] / "bot" / "db" / "migrations" / "001-initial.sql"
    shutil.copy(shipped, folder / "001-initial.sql")
    (folder / "002-extra.sql").write_text(second)
    return folder


async def test_failing_migration_leaves_nothing_half_applied(tmp_path):
    path = tmp_path / "bot.sqlite3"
    broken = _migrations_dir(tmp_path, """
        BEGIN IMMEDIATE;
        CREATE TABLE extra (x INTEGER);
        INSERT INTO extra VALUES (1);
        INSERT INTO no_such_table VALUES (1);
        PRAGMA user_version = 2;
        COMMIT;
    """)
    with pytest.raises(MigrationError, match="002-extra.sql"):
        await open_database(path, migrations_dir=broken)
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # 001 committed, 002 not at all
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "jobs" in names and "extra" not in names

    fixed = _migrations_dir(tmp_path, """
        BEGIN IMMEDIATE;
        CREATE TABLE extra (x INTEGER);
        PRAGMA user_version = 2;
        COMMIT;
    """)
    db = await open_database(path, migrations_dir=fixed)
    assert await db.user_version() == 2
    assert await db.run(Conn.fetchval, "SELECT COUNT(*) FROM extra") == 0
    await db.close()


def test_migration_files_are_checked(tmp_path):
    names = [m.name for m in load_migrations()]  # shipped inside the package
    assert names[0] == "001-initial.sql"
    folder = _migrations_dir(tmp_path, "BEGIN; CREATE TABLE t (x); COMMIT;")
    with pytest.raises(MigrationError, match="user_version = 2"):
        load_migrations(folder)
    (folder / "002-extra.sql").unlink()
    (folder / "003-gap.sql").write_text("BEGIN; PRAGMA user_version = 3; COMMIT;")
    with pytest.raises(MigrationError, match="003-gap.sql"):
        load_migrations(folder)


async def test_transaction_rolls_back_on_error(store):
    db = await open_database(store)
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as tx:
            await tx.run(kv_set, "a", "1")
            raise RuntimeError("boom")
    assert await db.run(kv_get, "a") is None
    async with db.transaction() as tx:
        await tx.run(kv_set, "a", "2")
        await db.run(kv_set, "b", "3")  # the owning task may use the Database: same transaction
    assert (await db.run(kv_get, "a"), await db.run(kv_get, "b")) == ("2", "3")
    with pytest.raises(RuntimeError, match="nested"):
        async with db.transaction():
            async with db.transaction():
                pass
    await db.close()


async def test_run_tx_is_all_or_nothing_in_one_call(store):
    db = await open_database(store)

    def write_then_fail(c: Conn) -> None:
        kv_set(c, "a", "1")  # query functions given a Conn run at once, in the database thread
        kv_set(c, "b", "2")
        raise LookupError("stop")

    with pytest.raises(LookupError):
        await db.run_tx(write_then_fail)
    assert (await kv_get(db, "a"), await db.run(kv_get, "b")) == (None, None)

    def write(c: Conn, value: str) -> str | None:
        kv_set(c, "a", value)
        return kv_get(c, "a")

    assert await db.run_tx(write, "1") == "1"
    assert await db.run_read(kv_get, "a") == "1"
    async with db.transaction() as tx:
        with pytest.raises(RuntimeError, match="tx.run"):
            await db.run_tx(write, "2")
        assert await tx.run(write, "3") == "3"
    assert await kv_get(db, "a") == "3"
    await db.close()


async def test_other_tasks_wait_for_an_open_transaction(store):
    """A statement from another task must not land inside (and be rolled back with) an open one."""
    db = await open_database(store)
    inside, release = asyncio.Event(), asyncio.Event()

    async def failing_transaction() -> None:
        async with db.transaction() as tx:
            await tx.run(kv_set, "mine", "x")
            inside.set()
            await release.wait()
            raise RuntimeError("abort")

    first = asyncio.create_task(failing_transaction())
    await inside.wait()
    other = asyncio.create_task(kv_set(db, "other", "y"))
    await asyncio.sleep(0)  # let it reach the lock
    assert not other.done()
    release.set()
    with pytest.raises(RuntimeError, match="abort"):
        await first
    await other
    assert await db.run(kv_get, "mine") is None
    assert await db.run(kv_get, "other") == "y"
    await db.close()


async def _job(db, task_uuid: str = "t-1") -> int:
    return await insert_job(
        db, guild_id=1, channel_id=2, user_id=3, model_key="m", params={"prompt": "x"}, task_uuid=task_uuid,
        duration_s=5, variations=1, estimate_micro=350_000, created_at=1.0, day="2024-01-01",
        month="2024-01", upload_limit=None, parent_job_id=None,
    )


async def _money(db, job_id: int, kind: str, amount: int = 350_000, reserved: int = 350_000) -> int | None:
    return await insert_ledger(
        db, kind=kind, guild_id=1, user_id=3, job_id=job_id, amount_micro=amount, day="2024-01-01",
        month="2024-01", actor="test", reason=None, at=1.0, reserved_micro=reserved,
    )


async def test_ledger_is_append_only_and_exactly_once(store):
    db = await open_database(store)
    job_id = await _job(db)
    with pytest.raises(IntegrityError, match="offset the job's reserve"):
        await _money(db, job_id, "release")  # nothing reserved yet
    assert await _money(db, job_id, "reserve") is not None
    assert await _money(db, job_id, "reserve") is None  # one reserve per job
    with pytest.raises(IntegrityError, match="offset the job's reserve"):
        await _money(db, job_id, "settle", 300_000, reserved=100_000)  # must undo the real reserve
    with pytest.raises(IntegrityError, match="settled cost"):
        await _money(db, job_id, "refund", 300_000)  # nothing settled yet
    assert await _money(db, job_id, "settle", 300_000) is not None
    assert await _money(db, job_id, "settle", 300_000) is None  # one settle-or-release per job
    assert await _money(db, job_id, "release") is None
    with pytest.raises(IntegrityError, match="settled cost"):
        await _money(db, job_id, "refund", 350_000)  # not what was settled
    assert await _money(db, job_id, "refund", 300_000) is not None
    assert await _money(db, job_id, "refund", 300_000) is None
    with pytest.raises(IntegrityError, match="append-only"):
        await db.run(Conn.execute, "UPDATE ledger SET amount_micro = 0")
    with pytest.raises(IntegrityError, match="append-only"):
        await db.run(Conn.execute, "DELETE FROM ledger")
    with pytest.raises(IntegrityError):  # only credits may be negative
        await _money(db, job_id, "reserve", -1)
    with pytest.raises(IntegrityError):  # foreign keys are on
        await _money(db, 999, "settle")
    assert [r.kind for r in await db.run(ledger_for_job, job_id)] == ["reserve", "settle", "refund"]
    await db.close()


async def test_schema_rejects_bad_rows(store):
    db = await open_database(store)
    job_id = await _job(db)
    with pytest.raises(IntegrityError):
        await _job(db)  # task_uuid is unique
    with pytest.raises(IntegrityError):
        await db.run(Conn.execute, "UPDATE jobs SET state = 'exploded' WHERE id = ?", (job_id,))
    first = await db.run(insert_result, job_id=job_id, video_uuid="v", video_url=None, seed=1, cost_micro=1,
                                  nsfw=False, now=1.0)
    again = await db.run(insert_result, job_id=job_id, video_uuid="v", video_url=None, seed=1, cost_micro=1,
                                  nsfw=False, now=1.0)
    assert first is not None and again is None
    await db.close()


async def test_guild_settings_and_backup(tmp_path):
    db = await open_database(tmp_path / "bot.sqlite3")
    assert (await db.run(get_guild_settings, 5)).paused is False
    settings = await db.run(update_guild_settings, 5, paused=True, pause_reason="x", log_channel_id=9)
    assert (settings.paused, settings.pause_reason, settings.log_channel_id) == (True, "x", 9)
    settings = await db.run(update_guild_settings, 5, paused=False)
    assert (settings.paused, settings.log_channel_id) == (False, 9)
    with pytest.raises(ValueError):
        await db.run(update_guild_settings, 5, owner_id=6)
    assert await db.run(add_blocklist_term, 5, "Gore") and not await db.run(add_blocklist_term, 5, "gore")
    await db.backup(tmp_path / "copy" / "backup.sqlite3")
    await db.close()
    with raw(tmp_path / "copy" / "backup.sqlite3") as conn:
        assert conn.execute("SELECT paused, log_channel_id FROM guild_settings").fetchone() == (0, 9)
        assert conn.execute("SELECT term FROM blocklist").fetchall() == [("Gore",)]


# ---- PostgreSQL -------------------------------------------------------------------------------


async def test_postgres_migrates_an_empty_database_and_reopens(pg_url):
    db = await open_database(pg_url)
    assert db.store == "postgres"
    assert await db.user_version() == load_migrations()[-1].version == len(load_migrations(store="postgres"))
    rows = await db.run(Conn.fetchall, "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                        ("public",))
    tables = {r["table_name"] for r in rows}
    assert TABLES <= tables and not GONE & tables
    rows = await db.run(Conn.fetchall, "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                        ("runs",))
    assert "polled_at" in {r["column_name"] for r in rows}
    rows = await db.run(Conn.fetchall, "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                        ("jobs",))
    assert ENHANCE_COLUMNS <= {r["column_name"] for r in rows}
    await db.run(kv_set, "command_hash", "abc")
    await db.close()
    db = await open_database(pg_url)  # 001 has plain CREATE TABLEs: a clean reopen proves it was skipped
    assert await db.run(kv_get, "command_hash") == "abc"
    await db.close()


def _pg_migrations_dir(tmp_path: Path, second_pg: str) -> Path:
    folder = _migrations_dir(
        tmp_path, "BEGIN IMMEDIATE; CREATE TABLE extra (x INTEGER); PRAGMA user_version = 2; COMMIT;"
    )
    shipped = Path(__file__).resolve().parents[2] / "bot" / "db" / "migrations" / "pg" / "001-initial.sql"
    (folder / "pg").mkdir(exist_ok=True)
    shutil.copy(shipped, folder / "pg" / "001-initial.sql")
    (folder / "pg" / "002-extra.sql").write_text(second_pg)
    return folder


async def test_postgres_failing_migration_leaves_nothing_half_applied(pg_url, tmp_path):
    broken = _pg_migrations_dir(tmp_path, "CREATE TABLE extra (x INTEGER); INSERT INTO no_such_table VALUES (1);")
    with pytest.raises(MigrationError, match="002-extra.sql"):
        await open_database(pg_url, migrations_dir=broken)
    fixed = _pg_migrations_dir(tmp_path, "CREATE TABLE extra (x INTEGER);")
    db = await open_database(pg_url, migrations_dir=fixed)  # 001 stayed, 002 runs again from nothing
    assert await db.user_version() == 2
    assert await db.run(Conn.fetchval, "SELECT COUNT(*) FROM extra") == 0
    await db.close()


def test_every_migration_has_its_postgres_twin(tmp_path):
    sqlite, postgres = load_migrations(), load_migrations(store="postgres")
    assert [m.name for m in sqlite] == [m.name for m in postgres]
    folder = _pg_migrations_dir(tmp_path, "CREATE TABLE extra (x INTEGER);")
    (folder / "pg" / "002-extra.sql").rename(folder / "pg" / "002-other.sql")
    with pytest.raises(MigrationError, match="must match the SQLite ones"):
        load_migrations(folder, store="postgres")


async def test_postgres_backup_points_at_pg_dump(pg_url, tmp_path):
    db = await open_database(pg_url)
    with pytest.raises(NotImplementedError, match="pg_dump"):
        await db.backup(tmp_path / "copy")
    await db.close()


async def test_blocklist_is_case_insensitive_on_both_stores(store):
    db = await open_database(store)
    assert await add_blocklist_term(db, 5, "Gore")
    assert not await add_blocklist_term(db, 5, "gORE")
    assert await add_blocklist_term(db, 5, "axe")
    assert await list_blocklist(db, 5) == ["axe", "Gore"]
    assert await remove_blocklist_term(db, 5, "GORE")
    assert await list_blocklist(db, 5) == ["axe"]
    await db.close()


async def test_placeholders_translate_outside_literals_only():
    from bot.db.postgres import translate

    assert translate("SELECT ? WHERE a = :a AND b = ':x' AND c::text LIKE 'a%' -- ?:z\n") == (
        "SELECT %s WHERE a = %(a)s AND b = ':x' AND c::text LIKE 'a%%' -- ?:z\n"
    )


async def test_dm_jobs_stored_under_the_terminal_move_to_their_own_scope(store, tmp_path):
    """Migration 004 on both stores: a job of guild 0 with a channel was a DM: it and its ledger rows
    move to the DM scope (-1); the terminal's jobs (channel 0), guild jobs and guild-0 credits stay
    where they are; the ledger is append-only again afterwards."""
    db = await open_database(store, migrations_dir=migrations_before(tmp_path, 4))
    try:
        assert await db.user_version() == 3

        def fill(c: Conn) -> None:
            for guild, channel in ((0, 0), (0, 555), (7, 10)):  # the terminal, a DM, guild 7
                job_id = insert_job(c, guild_id=guild, channel_id=channel, user_id=5, model_key="kling-2.5-turbo-pro",
                                    params={}, task_uuid=f"t-{channel}", duration_s=5, variations=1,
                                    estimate_micro=350_000, created_at=0.0, day="2024-03-10", month="2024-03",
                                    upload_limit=None, parent_job_id=None)
                for kind, amount in (("reserve", 350_000), ("settle", 300_000)):
                    insert_ledger(c, kind=kind, guild_id=guild, user_id=5, job_id=job_id, amount_micro=amount,
                                  day="2024-03-10", month="2024-03", actor="system", reason=None, at=0.0,
                                  reserved_micro=350_000)
            insert_ledger(c, kind="credit", guild_id=0, user_id=5, job_id=None, amount_micro=1_000_000,
                          day="2024-03-10", month="2024-03", actor="operator", reason="prize", at=0.0)

        await db.run_tx(fill)
    finally:
        await db.close()
    db = await open_database(store)
    try:
        assert await db.user_version() >= 4
        jobs = await db.run(Conn.fetchall, "SELECT channel_id, guild_id FROM jobs ORDER BY id")
        assert [tuple(r) for r in jobs] == [(0, 0), (555, -1), (10, 7)]
        rows = await db.run(Conn.fetchall, "SELECT kind, guild_id FROM ledger ORDER BY id")
        assert [tuple(r) for r in rows] == [("reserve", 0), ("settle", 0), ("reserve", -1), ("settle", -1),
                                            ("reserve", 7), ("settle", 7), ("credit", 0)]
        with pytest.raises(Exception, match="append-only"):
            await db.run(Conn.execute, "UPDATE ledger SET guild_id = 0 WHERE guild_id = -1")
    finally:
        await db.close()


async def test_runs_keep_their_rows_and_gain_polled_at_when_the_heartbeat_goes(store, tmp_path):
    """Migration 007 on both stores: a database at 006 with a run and the old heartbeat row: the run
    stays, with no poll round recorded yet (health counts from its start), and the heartbeat table goes."""
    db = await open_database(store, migrations_dir=migrations_before(tmp_path, 7))
    try:
        assert await db.user_version() == 6
        await register_run(db, run_id="h:1:a", kind="discord", host="h", pid=1, now=100.0, lease_until=130.0)
        await db.run(Conn.execute, "INSERT INTO heartbeat (id, at, pid) VALUES (1, 120.0, 1)")
    finally:
        await db.close()
    db = await open_database(store)
    try:
        assert await db.user_version() >= 7  # and any migration after it
        [run] = await live_runs(db, 110.0)
        assert (run.run_id, run.started_at, run.polled_at) == ("h:1:a", 100.0, None)
        await record_poll_round(db, "h:1:a", 125.0)
        assert [r.polled_at for r in await live_runs(db, 110.0)] == [125.0]
        with pytest.raises(Exception, match="heartbeat"):
            await db.run(Conn.fetchall, "SELECT * FROM heartbeat")
    finally:
        await db.close()


async def test_jobs_gain_the_prompt_enhancer_columns(store, tmp_path):
    """Migration 009 on both stores: a database at 008 with a job: the job gains the enhancer's columns
    (no enhancement: reserve NULL, nothing sent, not resent)."""
    db = await open_database(store, migrations_dir=migrations_before(tmp_path, 9))
    try:
        assert await db.user_version() == 8
        await db.run(insert_job, guild_id=7, channel_id=10, user_id=5, model_key="kling-2.5-turbo-pro", params={},
                     task_uuid="t-old", duration_s=5, variations=1, estimate_micro=350_000, created_at=0.0,
                     day="2024-03-10", month="2024-03", upload_limit=None, parent_job_id=None)
    finally:
        await db.close()
    db = await open_database(store)
    try:
        assert await db.user_version() >= 9
        [job] = await db.run(Conn.fetchall, "SELECT * FROM jobs")
        assert (job["enhance_reserve_micro"], job["enhance_sent_at"], job["enhance_resent"], job["enhanced_prompt"],
                job["enhance_cost_micro"]) == (None, None, 0, None, None)
        with pytest.raises(IntegrityError):
            await db.run(Conn.execute, "UPDATE jobs SET enhance_reserve_micro = -1")
    finally:
        await db.close()
