"""`klingbot doctor`: check what `klingbot run` needs, one line per check, before it is needed.

Config, database (opens, schema at this version, write lock obtainable), the Runware key (one cheap
authenticated call), the Discord token (GET /users/@me, then the application id), and the invite
URL with exactly the permissions the bot uses. Exit 1 on any failure. Secrets are never printed:
every line goes through ``Doctor.say``, which also redacts the secret values should an error text
ever carry one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from bot.config import Config, ConfigError, load_config, resolve_config_path
from bot.db import open_database
from bot.db.connection import Conn, describe_location, load_migrations
from bot.discordbot.invite import INVITE_PERMISSIONS, invite_url
from bot.errors import UserFacingError
from bot.runware.client import RunwareClient
from bot.runware.errors import AuthError, BalanceError, RunwareError, TransportError

CHECK_TIMEOUT_S = 15.0
class Doctor:
    def __init__(self, secrets: list[SecretStr | None] | None = None) -> None:
        self.failures: list[str] = []
        self._secrets: list[str] = []
        self.add_secrets(secrets or [])

    def add_secrets(self, secrets: list[SecretStr | None]) -> None:
        self._secrets += [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]

    def say(self, text: str) -> None:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        print(text, flush=True)

    def ok(self, name: str, detail: str) -> None:
        self.say(f"OK    {name}: {detail}")

    def fail(self, name: str, detail: str) -> None:
        self.failures.append(name)
        self.say(f"FAIL  {name}: {detail}")


# ---- checks ------------------------------------------------------------------------------------


def check_config(doc: Doctor, path_arg: str | None) -> Config | None:
    file = resolve_config_path(path_arg)
    try:
        cfg = load_config(path_arg)
    except ConfigError as exc:
        doc.fail("config", str(exc))
        return None
    secrets = cfg.secrets
    doc.add_secrets([secrets.discord_token, secrets.runware_api_key, secrets.runware_webhook_secret,
                     secrets.database_url, cfg.storage.url])
    if cfg.source == "(defaults)":
        doc.ok("config", f"no file at {file}: using the defaults")
    else:
        doc.ok("config", f"{cfg.source} loaded ({len(cfg.models)} models)")
    return cfg


def _take_write_lock(conn: Conn) -> None:
    """Writes and rolls back: run_tx's BEGIN ... ROLLBACK around it proves the database is writable."""
    conn.execute("INSERT INTO kv (key, value) VALUES ('doctor:write-check', '') ON CONFLICT (key) DO NOTHING")
    raise _WriteChecked


class _WriteChecked(Exception):
    """Raised after the write check's statement to roll it back."""


async def check_database(doc: Doctor, cfg: Config) -> None:
    path = describe_location(cfg.database)
    existed = isinstance(cfg.database, SecretStr) or Path(path).is_file()  # a PostgreSQL one is never created
    try:
        db = await open_database(cfg.database)
    except Exception as exc:
        doc.fail("database", f"cannot open {path}: {type(exc).__name__}: {exc}")
        return
    try:
        latest = len(load_migrations())
        version = await db.user_version()
        if version != latest:
            doc.fail("database", f"{path} has schema version {version}, this klingbot knows {latest} "
                                 "(was it made by a newer klingbot?)")
            return
        with contextlib.suppress(_WriteChecked):
            await db.run_tx(_take_write_lock)
    except Exception as exc:
        doc.fail("database", f"{path} is not writable: {type(exc).__name__}: {exc}")
        return
    finally:
        await db.close()
    doc.ok("database", f"{path} {'opened' if existed else 'created'}, schema version {version}, writable")


async def check_runware(doc: Doctor, cfg: Config) -> None:
    name = "runware key"
    key = cfg.secrets.runware_api_key
    if key is None:
        doc.fail(name, "RUNWARE_API_KEY is not set (put the Runware API key in the environment)")
        return
    url = cfg.runware.api_url
    timeout = min(cfg.runware.request_timeout_s, CHECK_TIMEOUT_S)
    try:
        async with RunwareClient(api_url=url, api_key=key, timeout_s=timeout, max_retries=1) as client:
            await client.check_key()
    except AuthError as exc:
        doc.fail(name, f"Runware at {url} rejected RUNWARE_API_KEY ({exc.code}, HTTP {exc.status})")
    except BalanceError:
        doc.fail(name, f"the key works but the Runware account at {url} has no balance left (HTTP 402)")
    except TransportError as exc:
        doc.fail(name, f"could not reach Runware at {url}: {exc.message}")
    except RunwareError as exc:
        doc.fail(name, f"Runware at {url} answered {exc.code} (HTTP {exc.status}): {exc.message}")
    else:
        doc.ok(name, f"accepted by {url}")


async def _discord_get(http: httpx.AsyncClient, base: str, path: str, token: SecretStr) -> httpx.Response:
    return await http.get(base + path, headers={"Authorization": "Bot " + token.get_secret_value()})


async def check_discord(doc: Doctor, cfg: Config) -> int | None:
    """Returns the application id when the token works."""
    name = "discord token"
    token = cfg.secrets.discord_token
    if token is None:
        doc.fail(name, "DISCORD_TOKEN is not set (put the bot's token in the environment)")
        return None
    base = cfg.discord.api_base_url.rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S, follow_redirects=False) as http:
            me = await _discord_get(http, base, "/users/@me", token)
            if me.status_code == 401:
                doc.fail(name, f"Discord at {base} rejected DISCORD_TOKEN (HTTP 401): check the bot token")
                return None
            if me.status_code != 200:
                doc.fail(name, f"GET {base}/users/@me answered HTTP {me.status_code}")
                return None
            user: dict[str, Any] = me.json()
            if not user.get("bot"):
                doc.fail(name, "DISCORD_TOKEN belongs to a user account, not a bot")
                return None
            app = await _discord_get(http, base, "/oauth2/applications/@me", token)
            if app.status_code != 200:
                doc.fail(name, f"GET {base}/oauth2/applications/@me answered HTTP {app.status_code}")
                return None
            app_id = int(app.json()["id"])
    except httpx.HTTPError as exc:  # httpx's messages carry no headers, so no token
        doc.fail(name, f"could not reach Discord at {base}: {type(exc).__name__}: {exc}")
        return None
    except (ValueError, KeyError, TypeError):
        doc.fail(name, f"Discord at {base} answered something that is not its JSON")
        return None
    doc.ok(name, f"accepted: bot {user.get('username', '?')} (id {user.get('id')}), application {app_id}")
    return app_id


def check_webhooks(doc: Doctor, cfg: Config) -> None:
    """The same check `klingbot run` makes before it starts (the secret, the URL's shape)."""
    from bot.services.webhooks import webhook_settings

    try:
        settings = webhook_settings(cfg)
    except UserFacingError as exc:
        doc.fail("webhooks", exc.message)
        return
    if settings is not None:
        doc.ok("webhooks", f"Runware will post to {settings.public_url} (token set); the receiver "
                           f"listens on {cfg.runware.webhook_listen}")


async def run_checks(doc: Doctor, cfg: Config) -> int | None:
    check_webhooks(doc, cfg)
    await check_database(doc, cfg)
    await check_runware(doc, cfg)
    return await check_discord(doc, cfg)


def cmd_doctor(args: argparse.Namespace) -> int:
    doc = Doctor()
    cfg = check_config(doc, args.config)
    if cfg is not None:
        app_id = asyncio.run(run_checks(doc, cfg))
        if app_id is not None:
            doc.ok("invite", invite_url(app_id))
            doc.say("      (scopes: bot, applications.commands; permissions: "
                    + ", ".join(n.replace("_", " ") for n in INVITE_PERMISSIONS) + ")")
        else:
            doc.say("SKIP  invite: needs a working DISCORD_TOKEN to know the application id")
    if doc.failures:
        print(f"{len(doc.failures)} check(s) failed: {', '.join(doc.failures)}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0
