"""discord.py's real start path (login, gateway, tree sync, interactions) against the fake Discord."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from pydantic import SecretStr

from bot.discordbot.endpoints import DISCORD_API_BASE, point_discord_at, reset_discord_endpoints
from bot.errors import UserFacingError
from tests.fakes.discord import FakeDiscord

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8


class DemoBot(commands.Bot):
    """A small bot: /render defers ephemerally, posts a file in the channel, edits it, follows up."""

    def __init__(self) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default(),
                         guild_ready_timeout=0.05)
        self.errors: list[Exception] = []
        self.gate = asyncio.Event()
        self.posted: list[discord.Message] = []

    async def setup_hook(self) -> None:
        @app_commands.command(name="render", description="Render a prompt")
        async def render(interaction: discord.Interaction, prompt: str, count: int = 1,
                         frame: discord.Attachment | None = None) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            try:
                if prompt == "wait":
                    await self.gate.wait()
                frame_note = f", frame {len(await frame.read())} bytes" if frame else ""
                msg = await interaction.channel.send(
                    f"{interaction.user.mention} rendering {prompt!r} x{count}",
                    file=discord.File(io.BytesIO(VIDEO), "result.mp4"),
                    allowed_mentions=discord.AllowedMentions(users=[interaction.user], roles=False,
                                                             everyone=False))
                self.posted.append(msg)
                await msg.edit(content=f"done: {prompt}")
                await interaction.followup.send(f"posted {msg.id}{frame_note}", ephemeral=True)
            except discord.HTTPException as exc:
                self.errors.append(exc)

        admin = app_commands.Group(name="admin", description="Moderator tools")
        grant = app_commands.Group(name="grant", description="Grant things", parent=admin)

        @grant.command(name="role", description="Give a role")
        async def grant_role(interaction: discord.Interaction, user: discord.User, role: discord.Role,
                             channel: discord.TextChannel) -> None:
            await interaction.response.send_message(
                f"{user.id} {role.name} {channel.id} perms={interaction.permissions.manage_guild}",
                ephemeral=True)

        @app_commands.command(name="ping", description="Ping")
        async def ping(interaction: discord.Interaction) -> None:
            view = discord.ui.View(timeout=None)
            view.add_item(discord.ui.Button(label="Again", custom_id="demo:again"))
            where = "dm" if interaction.guild is None else "guild"
            await interaction.response.send_message(f"pong from {where}", view=view)

        self.tree.add_command(render)
        self.tree.add_command(admin)
        self.tree.add_command(ping)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is discord.InteractionType.component:
            await interaction.response.edit_message(content=f"clicked by {interaction.user.id}", view=None)


@pytest.fixture
async def fake():
    fake = FakeDiscord()
    fake.seed_default()
    await fake.start()
    yield fake
    await fake.stop()
    reset_discord_endpoints()


@pytest.fixture
async def bot(fake: FakeDiscord):
    assert await point_discord_at(fake.api_base_url, SecretStr(fake.token)) == fake.gateway_url
    bot = DemoBot()
    task = asyncio.create_task(bot.start(fake.token))
    await fake.wait_ready()
    await asyncio.wait_for(bot.wait_until_ready(), 10)
    yield bot
    await bot.close()
    await asyncio.wait_for(task, 10)  # start() returns cleanly after close()
    await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                 and "site-packages/discord/" in t.get_coro().cr_code.co_filename]
    assert leftovers == []
    assert fake.unhandled == []


def deferred(fake: FakeDiscord, iid: str):
    return lambda: next((r for r in fake.interaction_responses(iid) if r.kind == "callback"), None)


async def test_point_discord_at_and_wire_basics(fake: FakeDiscord) -> None:
    assert await point_discord_at(DISCORD_API_BASE, SecretStr("x")) is None
    assert discord.http.Route.BASE == DISCORD_API_BASE
    with pytest.raises(UserFacingError) as err:
        await point_discord_at(fake.api_base_url, SecretStr("wrong-secret-token"))
    assert "wrong-secret-token" not in str(err.value) and "401" in str(err.value)

    await point_discord_at(fake.api_base_url, SecretStr(fake.token))
    assert discord.http.Route.BASE == fake.api_base_url
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == fake.gateway_url

    async with aiohttp.ClientSession() as session:
        auth = {"Authorization": f"Bot {fake.token}"}
        async with session.get(fake.api_base_url + "/users/@me", headers=auth) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
        async with session.get(fake.api_base_url + "/users/@me") as resp:
            assert resp.status == 401
        async with session.get(fake.api_base_url + "/no/such/route", headers=auth) as resp:
            assert resp.status == 404 and resp.headers["Content-Type"] == "application/json"
            assert (await resp.json())["code"] == 0
    assert fake.unhandled == ["GET /no/such/route"]
    fake.unhandled.clear()


async def test_slash_command_defer_file_edit_followup(fake: FakeDiscord, bot: DemoBot) -> None:
    synced = await bot.tree.sync()
    assert {c.name for c in synced} == {"render", "admin", "ping"}
    assert {c["name"] for c in fake.registered_commands()} == {"render", "admin", "ping"}
    seed = fake.seed_default()
    frame = fake.host_attachment("frame.png", b"\x89PNG-not-really" * 4, "image/png")

    iid = await fake.send_slash("render", {"prompt": "a cat", "count": 2}, attachments={"frame": frame})
    inter_payload = fake.interaction(iid).payload
    assert [o["type"] for o in inter_payload["data"]["options"]] == [3, 4, 11]

    original = await fake.wait_for(lambda: (m := fake.interaction_message(iid)) and not m.loading and m)
    callback = fake.interaction_responses(iid)[0]
    assert (callback.kind, callback.type, callback.flags) == ("callback", 5, 64)
    assert original.ephemeral
    assert fake.attachment_downloads == [int(frame["id"])]

    [posted] = fake.messages(seed.channel_id)
    assert posted.attachments[0]["filename"] == "result.mp4" and posted.attachments[0]["data"] == VIDEO
    assert posted.attachments[0]["size"] == len(VIDEO)
    assert posted.notified_user_ids == [seed.user_id]
    assert [e.content for e in posted.edits] == ["done: a cat"] and posted.content == "done: a cat"
    assert original.content == f"posted {posted.id}, frame {frame['size']} bytes"
    kinds = [(r.kind, r.message_id) for r in fake.interaction_responses(iid)]
    assert kinds == [("callback", original.id), ("followup", original.id)]


async def test_subcommand_group_with_resolved_options(fake: FakeDiscord, bot: DemoBot) -> None:
    await bot.tree.sync()
    seed = fake.seed_default()
    fake.add_role(seed.guild_id, 1_300_000_000_000_000_001, "mods", 1 << 5)
    fake.add_member(seed.guild_id, 1_300_000_000_000_000_002, "mod", [1_300_000_000_000_000_001])
    iid = await fake.send_slash("admin grant role", {"user": seed.user_id, "role": 1_300_000_000_000_000_001,
                                                     "channel": seed.channel_id},
                                user_id=1_300_000_000_000_000_002)
    reply = await fake.wait_for(lambda: fake.interaction_message(iid))
    assert reply.content == f"{seed.user_id} mods {seed.channel_id} perms=True"
    assert fake.interaction_responses(iid)[0].type == 4


async def test_buttons_dms_and_resume(fake: FakeDiscord, bot: DemoBot) -> None:
    await bot.tree.sync()
    seed = fake.seed_default()
    iid = await fake.send_slash("ping")
    msg = await fake.wait_for(lambda: fake.interaction_message(iid))
    assert msg.content == "pong from guild" and msg.custom_ids() == ["demo:again"]
    with pytest.raises(LookupError):
        await fake.click_button(msg, "demo:missing")
    click = await fake.click_button(msg, "demo:again")
    await fake.wait_for(lambda: fake.interaction_responses(click))
    assert fake.interaction_responses(click)[0].type == 7
    assert msg.content == f"clicked by {seed.user_id}" and msg.components == []

    await fake.reconnect_gateway()
    dm_iid = await fake.send_slash("ping", dm=True)
    dm_msg = await fake.wait_for(lambda: fake.interaction_message(dm_iid))
    assert dm_msg.content == "pong from dm" and dm_msg.guild_id is None
    assert "user" in fake.interaction(dm_iid).payload and "member" not in fake.interaction(dm_iid).payload


async def test_channel_rate_limit_429_is_retried(fake: FakeDiscord, bot: DemoBot) -> None:
    seed = fake.seed_default()
    channel = bot.get_channel(seed.channel_id)
    msg = await channel.send("first")
    fake.channel_rate_limit = (2, 0.8)
    # Another writer spends the channel's edit window, so the bot's edit meets a 429.
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.patch(f"{fake.api_base_url}/channels/{seed.channel_id}/messages/{msg.id}",
                                     json={"content": "other"},
                                     headers={"Authorization": f"Bot {fake.token}"}) as resp:
                assert resp.status == 200 and resp.headers["X-RateLimit-Limit"] == "2"
    await msg.edit(content="edited")
    assert fake.count_429 == 1
    assert fake.message(msg.id).edits[-1].content == "edited"
    patches = [c.status for c in fake.calls if c.method == "PATCH"]
    assert patches == [200, 200, 429, 200]


async def test_faults_surface_as_discord_errors(fake: FakeDiscord, bot: DemoBot) -> None:
    seed = fake.seed_default()
    channel = bot.get_channel(seed.channel_id)
    msg = await channel.send("hello")
    fake.fail_next("PATCH", r"^/channels/\d+/messages/\d+$", 404)
    with pytest.raises(discord.NotFound) as not_found:
        await msg.edit(content="x")
    assert not_found.value.code == 10008
    fake.delete_message(msg.id)
    with pytest.raises(discord.NotFound):
        await msg.edit(content="y")
    fake.deny_channel(seed.channel_id)
    await fake.wait_for(lambda: not channel.permissions_for(channel.guild.me).send_messages)
    with pytest.raises(discord.Forbidden) as forbidden:
        await channel.send("z")
    assert forbidden.value.code == 50013
    # Some permissions only: text still goes out, files do not (as on Discord), and the cache agrees.
    fake.deny_channel(seed.channel_id, permissions=1 << 15)  # Attach Files
    await fake.wait_for(lambda: channel.permissions_for(channel.guild.me).send_messages)
    assert not channel.permissions_for(channel.guild.me).attach_files
    await channel.send("text is fine")
    with pytest.raises(discord.Forbidden):
        await channel.send(file=discord.File(io.BytesIO(b"x"), "a.mp4"))
    fake.deny_channel(seed.channel_id, denied=False)
    fake.max_upload_bytes = 100
    with pytest.raises(discord.HTTPException) as too_big:
        await channel.send(file=discord.File(io.BytesIO(b"x" * 101), "big.mp4"))
    assert (too_big.value.status, too_big.value.code) == (413, 40005)

    member = await bot.fetch_user(seed.user_id)
    await member.send("your job failed")
    [dm] = fake.dm_channels.values()
    assert [m.content for m in fake.messages(int(dm["id"]))] == ["your job failed"]
    fake.dm_closed.add(seed.user_id)
    with pytest.raises(discord.Forbidden) as closed:
        await member.send("again")
    assert closed.value.code == 50007


async def test_expired_interaction_token(fake: FakeDiscord, bot: DemoBot) -> None:
    await bot.tree.sync()
    iid = await fake.send_slash("render", {"prompt": "wait"})
    await fake.wait_for(deferred(fake, iid))
    fake.expire_interaction(iid)
    bot.gate.set()
    await fake.wait_for(lambda: bot.errors)
    assert (bot.errors[0].status, bot.errors[0].code) == (401, 50027)
