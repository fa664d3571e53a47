"""/genadmin as Discord receives it: every subcommand, option, type, limit and description, as a
checked-in copy (tests/discordbot/genadmin_tree.json). A change to the tree must be deliberate: the
test fails until the copy is updated (KLINGBOT_WRITE_TREE=1 rewrites it)."""

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
        await bot.close()
    return json.loads(json.dumps(genadmin, sort_keys=True, default=str))


async def test_genadmin_tree_is_the_checked_in_one():
    tree = await registered_genadmin()
    if os.environ.get("KLINGBOT_WRITE_TREE") == "1":
        SNAPSHOT.write_text(json.dumps(tree, indent=1, sort_keys=True) + "\n")
    assert tree == json.loads(SNAPSHOT.read_text())


async def test_every_subcommand_is_in_the_tree():
    tree = await registered_genadmin()
    paths = sorted(
        f"{o['name']} {s['name']}" if o["type"] == 2 else o["name"]
        for o in tree["options"] for s in (o.get("options", []) if o["type"] == 2 else [o])
    )
    assert paths == sorted([
        "audit", "ban", "blocklist add", "blocklist list", "blocklist remove", "budget set",
        "channels add", "channels list", "channels remove", "credit", "logchannel clear", "logchannel set",
        "modrole clear", "modrole set", "pause", "quota reset", "quota set", "quota show", "refund",
        "resume", "role-quota clear", "role-quota set", "safety mode", "unban", "usage",
    ])
