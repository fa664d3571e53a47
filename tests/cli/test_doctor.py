"""`klingbot doctor` in a subprocess against the Runware simulator and the fake Discord."""

import asyncio
import os
import secrets
import socket
import sqlite3
import sys

import pytest

from bot.discordbot.interactions import REQUIRED_PERMISSIONS
from bot.discordbot.invite import INVITE_PERMISSIONS, invite_permissions
from bot.simulator.server import run_simulator
from tests.fakes.discord import FakeDiscord

# View Channel 1<<10, Send Messages 1<<11, Embed Links 1<<14, Attach Files 1<<15,
# Read Message History 1<<16, Send Messages in Threads 1<<38 (Discord's permission flags).
EXPECTED_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 38)


async def doctor(tmp_path, *, runware_url, discord_url, key, token, extra_env=None, extra_runware=""):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[discord]\napi_base_url = "{discord_url}"\n'
        f'[runware]\napi_url = "{runware_url}"\nrequest_timeout_s = 5.0\n{extra_runware}'
        f'[storage]\npath = "{(tmp_path / "db" / "bot.sqlite3").as_posix()}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWARE_", "DISCORD_", "KLINGBOT_"))}
    env.update({"RUNWARE_API_KEY": key, "DISCORD_TOKEN": token, **(extra_env or {})})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "doctor", "--config", str(config), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def world():
    key = "rw-" + secrets.token_hex(16)
    async with run_simulator(api_key=key) as sim, FakeDiscord() as fake:
        yield sim, fake, key


def line_of(out, name):
    (line,) = [ln for ln in out.splitlines() if f" {name}:" in ln]
    return line


async def test_all_ok_prints_invite_with_exact_permissions(tmp_path, world):
    sim, fake, key = world
    code, out, err = await doctor(tmp_path, runware_url=sim.url, discord_url=fake.api_base_url,
                                  key=key, token=fake.token)
    assert code == 0, out + err
    for name in ("config", "database", "runware key", "discord token", "invite"):
        assert line_of(out, name).startswith("OK"), out
    invite = line_of(out, "invite").split(": ", 1)[1]
    assert invite == (f"https://discord.com/oauth2/authorize?client_id={fake.app_id}"
                      f"&scope=bot+applications.commands&permissions={EXPECTED_PERMISSIONS}")
    assert str(tmp_path / "config.toml") in line_of(out, "config")
    # The token was checked against Discord itself (the fake), with the bot token.
    assert [c.path for c in fake.calls] == ["/users/@me", "/oauth2/applications/@me"]
    assert all(c.status == 200 for c in fake.calls)
    # The database was created, migrated and is a real SQLite file.
    with sqlite3.connect(tmp_path / "db" / "bot.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert key not in out + err and fake.token not in out + err


async def test_bad_discord_token_fails_the_discord_check(tmp_path, world):
    sim, fake, key = world
    bad = "bad-token." + secrets.token_urlsafe(16)
    code, out, err = await doctor(tmp_path, runware_url=sim.url, discord_url=fake.api_base_url,
                                  key=key, token=bad)
    assert code == 1
    assert line_of(out, "discord token").startswith("FAIL") and "401" in line_of(out, "discord token")
    assert line_of(out, "runware key").startswith("OK")
    assert "discord.com/oauth2" not in out  # no invite without an application id
    assert "discord token" in err
    assert bad not in out + err and key not in out + err


async def test_bad_runware_key_fails_the_runware_check(tmp_path, world):
    sim, fake, key = world
    bad = "rw-" + secrets.token_hex(16)
    code, out, err = await doctor(tmp_path, runware_url=sim.url, discord_url=fake.api_base_url,
                                  key=bad, token=fake.token)
    assert code == 1
    line = line_of(out, "runware key")
    assert line.startswith("FAIL") and "rejected RUNWARE_API_KEY" in line
    assert line_of(out, "discord token").startswith("OK")
    assert bad not in out + err and fake.token not in out + err


async def test_missing_secrets_and_unreachable_runware_fail(tmp_path, world):
    sim, fake, key = world
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    code, out, err = await doctor(tmp_path, runware_url=f"http://127.0.0.1:{closed_port}/v1",
                                  discord_url=fake.api_base_url,
                                  key=key, token="")
    assert code == 1
    assert "could not reach Runware" in line_of(out, "runware key")
    assert "DISCORD_TOKEN is not set" in line_of(out, "discord token")
    assert key not in out + err


async def test_bad_config_fails_and_names_the_key(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[runware]\npoll_every = 3\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWARE_", "DISCORD_", "KLINGBOT_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "doctor", "--config", str(config), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1
    assert out.decode().startswith("FAIL  config:") and "poll_every" in out.decode()
    assert not (tmp_path / "data").exists()  # nothing else was tried


def test_invite_permissions_cover_what_video_checks():
    assert invite_permissions() == EXPECTED_PERMISSIONS
    # Every permission /video refuses to work without is in the invite (threads need their own).
    assert {attr for attr, _ in REQUIRED_PERMISSIONS} <= set(INVITE_PERMISSIONS)
    assert "send_messages_in_threads" in INVITE_PERMISSIONS


async def test_webhooks_without_their_secret_fail_like_run_would(tmp_path, world):
    # `klingbot run` refuses to start when webhook_public_url is set without RUNWARE_WEBHOOK_SECRET:
    # doctor, which checks what run needs, must say so instead of "all checks passed".
    sim, fake, key = world
    hooks = 'webhook_public_url = "https://bot.example.com/runware-hook"\n'
    code, out, err = await doctor(tmp_path, runware_url=sim.url, discord_url=fake.api_base_url,
                                  key=key, token=fake.token, extra_runware=hooks)
    assert code == 1, out + err
    assert line_of(out, "webhooks").startswith("FAIL") and "RUNWARE_WEBHOOK_SECRET" in line_of(out, "webhooks")
    secret = "wh-" + secrets.token_hex(16)
    code, out, err = await doctor(tmp_path, runware_url=sim.url, discord_url=fake.api_base_url,
                                  key=key, token=fake.token, extra_runware=hooks,
                                  extra_env={"RUNWARE_WEBHOOK_SECRET": secret})
    assert code == 0, out + err
    assert line_of(out, "webhooks").startswith("OK") and "https://bot.example.com/runware-hook" in out
    assert secret not in out + err


async def test_database_check_on_postgres_names_the_server_not_the_password(tmp_path, world, pg_url):
    sim, fake, key = world
    password = "pw-" + secrets.token_hex(8)  # carried in the URL; the test server trusts loopback
    url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    code, out, err = await doctor(tmp_path, runware_url=sim.url, discord_url=fake.api_base_url, key=key,
                                  token=fake.token, extra_env={"KLINGBOT_DATABASE_URL": url})
    assert code == 0, out + err
    line = line_of(out, "database")
    assert line.startswith("OK") and pg_url in line and "writable" in line, out
    assert not (tmp_path / "db").exists()  # storage.path was not used
    with socket.socket() as probe:  # the same URL on a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    host_port = pg_url.split("@", 1)[1].split("/", 1)[0]
    unreachable = url.replace(host_port, f"127.0.0.1:{closed_port}")
    code, out2, err2 = await doctor(tmp_path, runware_url=sim.url, discord_url=fake.api_base_url, key=key,
                                    token=fake.token, extra_env={"KLINGBOT_DATABASE_URL": unreachable})
    assert code == 1
    assert line_of(out2, "database").startswith("FAIL") and "not answering" in line_of(out2, "database")
    assert password not in out + err + out2 + err2
