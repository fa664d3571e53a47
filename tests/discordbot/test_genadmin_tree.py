"""/genadmin as Discord receives it: every subcommand, option, type, limit and description, as a
checked-in copy (tests/discordbot/genadmin_tree.json). A change to the tree must be deliberate: the
test fails until the copy is updated (KLINGBOT_WRITE_TREE=1 rewrites it). Subcommands are compared
by name (Discord lists them by name); a subcommand's own options in their order."""

import json
import os
from pathlib import Path

from bot.config import Config
from bot.discordbot.app import KlingBot

SNAPSHOT = Path(__file__).with_name("genadmin_tree.json")


async def registered_genadmin() -> dict:
    bot = KlingBot(Config.model_validate({}), runware_api_key=None, commands_only=True)
    try:
        await bot._load_extensions()
        [genadmin] = [c for c in bot.command_payload(None) if c["name"] == "genadmin"]
    finally:
        await bot.http.close()  # never logged in nor connected: nothing else is open
    return json.loads(json.dumps(genadmin, sort_keys=True, default=str))


def by_name(command: dict) -> dict:
    """Subcommands and subgroups (option types 1 and 2) sorted by name, at every level."""
    options = command.get("options") or []
    if options and all(o["type"] in (1, 2) for o in options):
        command = {**command, "options": sorted((by_name(o) for o in options), key=lambda o: o["name"])}
    return command


async def test_genadmin_tree_is_the_checked_in_one():
    tree = await registered_genadmin()
    if os.environ.get("KLINGBOT_WRITE_TREE") == "1":
        SNAPSHOT.write_text(json.dumps(tree, indent=1, sort_keys=True) + "\n")
    assert by_name(tree) == by_name(json.loads(SNAPSHOT.read_text()))


async def test_every_subcommand_is_in_the_tree():
    tree = await registered_genadmin()
    paths = sorted(
        f"{o['name']} {s['name']}" if o["type"] == 2 else o["name"]
        for o in tree["options"] for s in (o.get("options", []) if o["type"] == 2 else [o])
    )
    assert paths == sorted([
        "audit", "ban", "blocklist add", "blocklist list", "blocklist remove", "budget set",
        "channels add", "channels list", "channels remove", "confirm set", "credit",
        "gallery clear", "gallery set", "logchannel clear", "logchannel set",
        "modrole clear", "modrole set", "pause", "quota reset", "quota set", "quota show", "refund",
        "resume", "role-quota clear", "role-quota set", "safety mode", "unban", "usage",
    ])
