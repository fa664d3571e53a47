"""The fake Discord refuses what Discord refuses: every body is checked against Discord's schema (the
pydantic models of discordopenapi) and the documented limits, and answered 400/50035 naming the field."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_schema import LEDGER, check_request

ROOT = Path(__file__).resolve().parents[2]
ROW = {"type": 1, "components": [{"type": 2, "style": 1, "custom_id": "kb:reroll:1", "label": "Re-roll"}]}


def command(max_value: int) -> list[dict]:
    return [{"name": "job", "description": "A job", "type": 1, "options": [
        {"type": 1, "name": "id", "description": "Show one job", "options": [
            {"type": 4, "name": "id", "description": "The job id", "required": True,
             "min_value": 1, "max_value": max_value}]}]}]


@pytest.fixture
async def fake():
    async with FakeDiscord() as fake:
        fake.seed_default()
        yield fake


async def send(fake: FakeDiscord, method: str, path: str, body: object, files: int = 0
               ) -> tuple[int, dict | list]:
    """A request as discord.py sends it: JSON, or multipart with payload_json and files[n]."""
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as http:
        if files:
            form = aiohttp.FormData()
            form.add_field("payload_json", json.dumps(body), content_type="application/json")
            for i in range(files):
                form.add_field(f"files[{i}]", b"x", filename=f"f{i}.mp4", content_type="video/mp4")
            request = http.request(method, fake.api_base_url + path, data=form, headers=headers)
        else:
            request = http.request(method, fake.api_base_url + path, json=body, headers=headers)
        async with request as response:
            return response.status, await response.json()


def failing_field(body: dict) -> tuple[str, str]:
    """The dotted path of the one field a 50035 body names, and its error code."""
    assert body["code"] == 50035 and body["message"] == "Invalid Form Body", body
    node, path = body["errors"], []
    while "_errors" not in node:
        [(key, node)] = node.items()
        path.append(key)
    return ".".join(path), node["_errors"][0]["code"]


INVALID_MESSAGES = [
    ({"content": "x" * 2001}, 0, "content", "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"description": "x" * 4097}]}, 0, "embeds.0.description", "BASE_TYPE_MAX_LENGTH"),
    ({"embeds": [{"title": "t", "description": "x" * 4000},
                 {"description": "y" * 2000}]}, 0, "embeds", "MAX_EMBED_SIZE_EXCEEDED"),
    ({"embeds": [{"fields": [{"name": "n", "value": "v"}] * 26}]}, 0, "embeds.0.fields", "BASE_TYPE_MAX_LENGTH"),
    ({"content": "ten files at most"}, 11, "files", "BASE_TYPE_MAX_LENGTH"),
    ({"content": "hi", "nonce": "n" * 26, "enforce_nonce": True}, 0, "nonce", "BASE_TYPE_MAX_LENGTH"),
    ({"content": "hi", "components": [{"type": 1, "components": ROW["components"] * 6}]}, 0,
     "components.0.components", "BASE_TYPE_MAX_LENGTH"),
    ({"content": "hi", "components": [ROW] * 6}, 0, "components", "BASE_TYPE_MAX_LENGTH"),
    ({"content": "hi", "components": [{"type": 1, "components": [
        {"type": 2, "style": 1, "custom_id": "c" * 101, "label": "x"}]}]}, 0,
     "components.0.components.0.custom_id", "BASE_TYPE_MAX_LENGTH"),
    ({"content": "hi", "components": [{"type": 1, "components": [{"type": 99, "style": 1}]}]}, 0,
     "components.0.components.0.type", "BASE_TYPE_CHOICES"),
    ({"content": "hi", "allowed_mentions": {"parse": [], "users": ["not-an-id"]}}, 0,
     "allowed_mentions.users.0", "NUMBER_TYPE_COERCE"),
    # Discord's rules per button style: a premium button (6) is its sku_id only; others need a custom_id.
    ({"content": "hi", "components": [{"type": 1, "components": [
        {"type": 2, "style": 6, "sku_id": "13", "label": "Buy"}]}]}, 0,
     "components.0.components.0.label", "BASE_TYPE_INVALID"),
    ({"content": "hi", "components": [{"type": 1, "components": [
        {"type": 2, "style": 6, "sku_id": "13", "custom_id": "buy"}]}]}, 0,
     "components.0.components.0.custom_id", "BASE_TYPE_INVALID"),
    ({"content": "hi", "components": [{"type": 1, "components": [{"type": 2, "style": 6}]}]}, 0,
     "components.0.components.0.sku_id", "BASE_TYPE_REQUIRED"),
    ({"content": "hi", "components": [{"type": 1, "components": [
        {"type": 2, "style": 1, "label": "x", "sku_id": "13", "custom_id": "a"}]}]}, 0,
     "components.0.components.0.sku_id", "BASE_TYPE_INVALID"),
    ({"content": "hi", "components": [{"type": 1, "components": [{"type": 2, "style": 1, "label": "x"}]}]}, 0,
     "components.0.components.0.custom_id", "BASE_TYPE_REQUIRED"),
]


@pytest.mark.discord_invalid_bodies
@pytest.mark.parametrize(("body", "files", "field", "code"), INVALID_MESSAGES)
async def test_a_message_discord_refuses_is_refused_naming_the_field(fake, body, files, field, code) -> None:
    channel = fake.seed_default().channel_id
    status, answer = await send(fake, "POST", f"/channels/{channel}/messages", body, files)
    assert status == 400
    assert failing_field(answer) == (field, code)
    assert fake.messages(channel) == []
    assert [v.field for v in fake.schema_violations] == [field]
    assert LEDGER.expected[-1] is fake.schema_violations[-1]


async def test_bodies_at_the_limits_are_accepted(fake) -> None:
    channel = fake.seed_default().channel_id
    body = {"content": "x" * 2000, "nonce": "kb-j9007199254740991-r12", "enforce_nonce": True,
            "allowed_mentions": {"parse": [], "users": [1100000000000000003]},  # ids as integers, as discord.py
            "embeds": [{"title": "t" * 256, "description": "d" * 4096, "color": 0x2ECC71,
                        "timestamp": "2026-01-01T00:00:00+00:00",
                        "fields": [{"name": "n", "value": "v" * 60, "inline": True}] * 25}],
            "components": [{"type": 1, "components": [
                {"type": 2, "style": 1, "custom_id": f"{i}" + "c" * 99, "label": "x"} for i in range(5)]}] * 5,
            "attachments": [{"id": i, "filename": f"f{i}.mp4"} for i in range(10)]}
    status, answer = await send(fake, "POST", f"/channels/{channel}/messages", body, files=10)
    assert status == 200, answer
    assert fake.schema_violations == [] and len(fake.messages(channel)) == 1


async def test_a_premium_button_with_only_its_sku_is_accepted(fake) -> None:
    channel = fake.seed_default().channel_id
    body = {"content": "Subscribe for more", "components": [{"type": 1, "components": [
        {"type": 2, "style": 6, "sku_id": "1300000000000000001", "disabled": False}]}]}
    status, answer = await send(fake, "POST", f"/channels/{channel}/messages", body)
    assert status == 200, answer


async def test_entitlements_the_fake_grants_are_discords_shape(fake) -> None:
    seed = fake.seed_default()
    mine = fake.grant_entitlement(13, user_id=seed.user_id, starts_at=1.7e9, ends_at=1.8e9)
    guilds = fake.grant_entitlement(13, guild_id=seed.guild_id)
    assert guilds["user_id"] == str(fake.guilds[seed.guild_id].owner_id)  # the schema wants a buyer
    assert fake.entitlements_for(seed.user_id, seed.guild_id) == [mine, guilds]
    assert fake.entitlements_for(seed.user_id, None) == [mine]
    assert fake.entitlements_for(7, seed.guild_id) == [guilds]
    with pytest.raises(ValueError, match="user or to a guild"):
        fake.grant_entitlement(13)
    with pytest.raises(ValueError, match="sku_id"):
        fake.grant_entitlement("not-a-snowflake", user_id=seed.user_id)  # type: ignore[arg-type]


@pytest.mark.discord_invalid_bodies
async def test_a_command_whose_integer_option_exceeds_2_53_minus_1_is_not_registered(fake) -> None:
    path = f"/applications/{fake.app_id}/commands"
    status, answer = await send(fake, "PUT", path, command(2**53))
    assert status == 400
    assert failing_field(answer) == ("0.options.0.options.0.max_value", "NUMBER_TYPE_MAX")
    assert "9007199254740991" in answer["errors"]["0"]["options"]["0"]["options"]["0"]["max_value"]["_errors"][0][
        "message"]
    assert fake.registered_commands() == []
    status, _ = await send(fake, "PUT", path, command(2**53 - 1))
    assert status == 200 and [c["name"] for c in fake.registered_commands()] == ["job"]


@pytest.mark.discord_invalid_bodies
async def test_interaction_callbacks_and_webhooks_are_checked(fake) -> None:
    assert check_request("POST", "/interactions/1/tok/callback", {"type": 5, "data": {"flags": 64}}) is None
    assert check_request("POST", "/interactions/1/tok/callback", {"type": 4, "data": {
        "content": "hi", "components": [ROW], "flags": 64}}) is None
    assert check_request("POST", "/interactions/1/tok/callback", {"type": 3}).field == "type"
    assert check_request("POST", "/interactions/1/tok/callback",
                         {"type": 4, "data": {"content": "x" * 2001}}).field == "data.content"
    assert check_request("PATCH", "/webhooks/1/tok/messages/@original",
                         {"embeds": [{"description": "x" * 4097}]}).field == "embeds.0.description"
    assert check_request("POST", "/webhooks/1/tok", {"content": "hi", "flags": 64}) is None


def test_a_test_that_sends_an_invalid_body_unannounced_fails(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard in tests/conftest.py: an unmarked test whose bot sends a refused body fails, even when
    the test itself only looked at what the bot did next; marked, it passes."""
    pytester.makeconftest("from tests.conftest import *  # noqa: F403\n"
                          "from tests.conftest import _discord_schema_guard  # noqa: F401\n")
    pytester.makepyfile(test_refused=textwrap.dedent("""
        import aiohttp, pytest
        from tests.fakes.discord import FakeDiscord

        async def post(fake):
            async with aiohttp.ClientSession() as http:
                url = f"{fake.api_base_url}/channels/{fake.seed_default().channel_id}/messages"
                async with http.post(url, json={"content": "x" * 2001},
                                     headers={"Authorization": f"Bot {fake.token}"}) as r:
                    return r.status

        async def test_unannounced():
            async with FakeDiscord() as fake:
                assert await post(fake) == 400

        @pytest.mark.discord_invalid_bodies
        async def test_announced():
            async with FakeDiscord() as fake:
                assert await post(fake) == 400
    """))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*refused bodies against Discord's schema*", "*content: BASE_TYPE_MAX_LENGTH*",
                                 "*2 bodies checked*1 violations (1 sent on purpose)*"])
