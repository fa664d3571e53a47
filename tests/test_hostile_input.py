"""Hostile and broken input to /video (SPEC 3.2, 5), table-driven against the real bot: every option out
of range or of the wrong type, every kind of bad attachment, blocked words, mentions that must ping no
one, the wrong channel, a banned member, a paused guild, and hostile text stored and shown verbatim.
Each refusal is a clear ephemeral message naming the problem; nothing is reserved, downloaded for
nothing, or sent to Runware."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
import pytest_asyncio
from PIL import Image

from bot.db.guilds import add_ban, add_blocklist_term, add_gen_channel, get_ban, update_guild_settings
from bot.db.jobs import jobs_by_state
from tests.fakes.world import BotWorld, image_bytes, started_world

pytestmark = pytest.mark.asyncio(loop_scope="module")

OTHER_USER = 1_300_000_000_000_000_001
ROLE_ID = 1_300_000_000_000_000_002


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BotWorld]:
    # One bot for the whole table: every case checks that it changed nothing.
    async with started_world(tmp_path_factory.mktemp("hostile")) as w:
        w.fake.add_role(w.seed.guild_id, ROLE_ID, "artists", 0)
        w.fake.add_member(w.seed.guild_id, OTHER_USER, "bystander", [ROLE_ID])
        yield w


async def refused(w: BotWorld, options: dict | list, attachments: dict | None = None, *,
                  downloads_allowed: bool = True, **where: Any) -> str:
    """Send /video, return the ephemeral reply, and check that nothing moved."""
    assert w.bot is not None and w.bot.db is not None
    jobs, ledger = len(await w.jobs()), len(await w.ledger())
    requests, downloads = w.sim.stats.http_requests, len(w.fake.attachment_downloads)
    iid = await w.fake.send_slash("video", options, attachments=attachments, **where)
    text = await w.reply(iid)
    assert not text.startswith("Queued"), text
    assert "Something went wrong" not in text, text  # a bug, not a clear answer
    assert (len(await w.jobs()), len(await w.ledger())) == (jobs, ledger)
    assert w.sim.stats.http_requests == requests  # Runware never called
    if not downloads_allowed:
        assert len(w.fake.attachment_downloads) == downloads
    [reply] = [r for r in w.fake.interaction_responses(iid) if r.kind == "edit_original"]
    assert reply.data["allowed_mentions"]["parse"] == []  # the reply pings no one, whatever it quotes
    return text


def job_id_of(reply: str) -> int:
    return int(reply.split("job #", 1)[1].split()[0].rstrip(".,"))


# ---- options --------------------------------------------------------------------------------------------

OPTION_CASES = [
    # (options, words the answer must contain)
    ({"prompt": "a"}, ["`prompt`", "2 to 2500"]),
    ({"prompt": "x" * 2501}, ["`prompt`", "2501 characters"]),
    ({"prompt": "      "}, ["`prompt`"]),
    ({"prompt": "nul\x00byte"}, ["`prompt`", "NUL"]),
    ({"prompt": "ok prompt", "negative_prompt": "b"}, ["`negative_prompt`"]),
    ({"prompt": "ok prompt", "negative_prompt": "y" * 2501}, ["`negative_prompt`"]),
    ({"prompt": "ok prompt", "cfg_scale": -0.1}, ["`cfg_scale`", "0 to 1"]),
    ({"prompt": "ok prompt", "cfg_scale": 1.5}, ["`cfg_scale`"]),
    ({"prompt": "ok prompt", "cfg_scale": 0.555}, ["`cfg_scale`", "0.01"]),
    ({"prompt": "ok prompt", "variations": 0}, ["`variations`", "1 to 4"]),
    ({"prompt": "ok prompt", "variations": 5}, ["`variations`", "1 to 4"]),
    ({"prompt": "ok prompt", "variations": -3}, ["`variations`"]),
    ({"prompt": "ok prompt", "quality": 19}, ["`quality`", "20 to 99"]),
    ({"prompt": "ok prompt", "quality": 100}, ["`quality`", "20 to 99"]),
    ({"prompt": "ok prompt", "duration": 7}, ["`duration`", "5 or 10"]),
    ({"prompt": "ok prompt", "duration": 0}, ["`duration`"]),
    ({"prompt": "ok prompt", "aspect": "4:3"}, ["`aspect`", "16:9"]),
    ({"prompt": "ok prompt", "format": "GIF"}, ["`format`", "MP4"]),
    ({"prompt": "ok prompt", "model": "kling-9-ultra"}, ["`model`", "kling-2.5-turbo-pro"]),
    ({"prompt": "ok prompt", "model": "kling-2.1-pro"}, ["first_frame"]),  # no text-to-video
    # Wrong types, as a broken or hostile client could send them: (name, Discord option type, value).
    ([("prompt", 3, "ok prompt"), ("variations", 3, "three")], ["`variations`"]),
    ([("prompt", 3, "ok prompt"), ("quality", 3, "high")], ["`quality`"]),
    ([("prompt", 3, "ok prompt"), ("cfg_scale", 3, "lots")], ["`cfg_scale`"]),
    ([("prompt", 3, "ok prompt"), ("duration", 3, "five")], ["`duration`"]),
    ([("prompt", 3, "ok prompt"), ("quality", 10, 55.5)], ["`quality`"]),
    ([("prompt", 4, 12345678)], ["`prompt`", "text"]),  # a number where text belongs
]


@pytest.mark.parametrize(("options", "words"), OPTION_CASES, ids=[str(i) for i in range(len(OPTION_CASES))])
async def test_bad_options_are_refused_clearly(world: BotWorld, options: dict | list,
                                               words: list[str]) -> None:
    text = await refused(world, options)
    for word in words:
        assert word in text, text


# ---- attachments -----------------------------------------------------------------------------------------

def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, rows: bytes | None = None) -> bytes:
    """A grayscale PNG whose header says width x height; ``rows`` is the raw (uncompressed) data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"\x00" * 64, 9)
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def bomb() -> bytes:
    """8000 x 8000 px of black in ~60 KB: 64 megapixels decoded."""
    side = 8000
    return png_claiming(side, side, (b"\x00" + b"\x00" * side) * side)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (640, 360), c) for c in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:])
    return out.getvalue()


def other_format(fmt: str, size: tuple[int, int] = (640, 360)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "green").save(out, fmt)
    return out.getvalue()


ATTACHMENT_CASES = [
    # (id, first frame (filename, bytes), last frame or None, words the answer must contain)
    ("text-named-png", ("cat.png", b"hello, this is not an image\n" * 40), None,
     ["first_frame", "not a recognised image"]),
    ("gif-renamed-png", ("cat.png", other_format("GIF")), None, ["first_frame", "GIF"]),
    ("bmp-renamed-jpg", ("cat.jpg", other_format("BMP")), None, ["first_frame", "BMP"]),
    ("truncated-png", ("cut.png", image_bytes(640, 360)[:300]), None, ["first_frame"]),
    ("animated-png", ("anim.png", animated("PNG")), None, ["first_frame", "animated"]),
    ("animated-webp", ("anim.webp", animated("WEBP")), None, ["first_frame", "animated"]),
    ("too-small", ("tiny.png", image_bytes(200, 200)), None, ["first_frame", "300 px"]),
    ("extreme-aspect", ("wide.png", image_bytes(1500, 300)), None, ["first_frame", "aspect"]),
    ("tall-aspect", ("tall.png", image_bytes(300, 1000)), None, ["first_frame", "aspect"]),
    ("mismatched-frames", ("a.png", image_bytes(640, 360)), ("b.png", image_bytes(400, 400)), ["last_frame"]),
    ("bad-last-frame", ("a.png", image_bytes(640, 360)), ("b.png", b"\x89PNG\r\n\x1a\nnope"), ["last_frame"]),
    ("decompression-bomb", ("bomb.png", bomb()), None, ["first_frame", "decompression bomb"]),
    ("header-lies", ("liar.png", png_claiming(40000, 40000)), None, ["first_frame"]),
]


@pytest.mark.parametrize(("first", "last", "words"), [c[1:] for c in ATTACHMENT_CASES],
                         ids=[c[0] for c in ATTACHMENT_CASES])
async def test_bad_attachments_are_refused_clearly(world: BotWorld, first: tuple, last: tuple | None,
                                                   words: list[str]) -> None:
    w = world
    attachments = {"first_frame": w.attach(first[0], first[1])}
    if last is not None:
        attachments["last_frame"] = w.attach(last[0], last[1])
    text = await refused(w, {"prompt": "make it move"}, attachments)
    for word in words:
        assert word in text, text


async def test_an_attachment_that_lies_about_its_size_is_cut_off_while_streaming(world: BotWorld) -> None:
    w = world
    big = image_bytes(640, 360) + b"\x00" * (21 * 1024 * 1024)  # over the 20 MB cap
    obj = w.attach("small.png", big)
    obj["size"] = 4096  # the attachment object says 4 KB
    text = await refused(w, {"prompt": "make it move"}, {"first_frame": obj})
    assert "first_frame" in text and "20.0 MB" in text


async def test_an_honestly_huge_attachment_is_refused_without_downloading(world: BotWorld) -> None:
    w = world
    obj = w.attach("huge.png", image_bytes(640, 360))
    obj["size"] = 64 * 1024 * 1024
    text = await refused(w, {"prompt": "make it move"}, {"first_frame": obj}, downloads_allowed=False)
    assert "first_frame" in text and "64.0 MB" in text


# ---- who, where, what ------------------------------------------------------------------------------------

async def test_blocked_words_are_refused_in_either_prompt(world: BotWorld) -> None:
    w = world
    assert w.bot is not None and w.bot.db is not None
    await add_blocklist_term(w.bot.db, w.seed.guild_id, "zebracorn")
    frame = w.attach("f.png", image_bytes())
    for options in ({"prompt": "a ZebraCorn at dawn"},
                    {"prompt": "a horse at dawn", "negative_prompt": "no zebracorn please"}):
        text = await refused(w, options, {"first_frame": frame}, downloads_allowed=False)
        assert "zebracorn" in text.lower() or "blocked" in text.lower(), text


async def test_a_banned_member_a_paused_guild_and_the_wrong_channel(world: BotWorld) -> None:
    w = world
    assert w.bot is not None and w.bot.db is not None
    db = w.bot.db
    frame = w.attach("f.png", image_bytes())
    hostile_reason = "spam @everyone **really** `x`'); DROP TABLE bans;--"
    await add_ban(db, w.seed.guild_id, OTHER_USER, hostile_reason, "user:1", time.time())
    text = await refused(w, {"prompt": "let me in"}, {"first_frame": frame}, downloads_allowed=False,
                         user_id=OTHER_USER)
    assert "banned" in text and "DROP TABLE bans" in text
    assert (await get_ban(db, w.seed.guild_id, OTHER_USER)).reason == hostile_reason

    paused_guild, paused_channel, gen_channel = (1_400_000_000_000_000_001, 1_400_000_000_000_000_002,
                                                 1_400_000_000_000_000_003)
    w.fake.add_guild(paused_guild, "Paused")
    w.fake.add_channel(paused_guild, paused_channel, "general")
    w.fake.add_channel(paused_guild, gen_channel, "video-gen")
    w.fake.add_member(paused_guild, w.seed.user_id, "member")
    await add_gen_channel(db, paused_guild, gen_channel)
    text = await refused(w, {"prompt": "wrong room"}, {"first_frame": frame}, downloads_allowed=False,
                         guild_id=paused_guild, channel_id=paused_channel)
    assert f"<#{gen_channel}>" in text
    await update_guild_settings(db, paused_guild, paused=True, pause_reason="maintenance <@&1> tonight")
    text = await refused(w, {"prompt": "right room"}, {"first_frame": frame}, downloads_allowed=False,
                         guild_id=paused_guild, channel_id=gen_channel)
    assert "paused" in text and "maintenance <@&1> tonight" in text


async def test_mentions_in_a_prompt_ping_no_one(world: BotWorld) -> None:
    w = world
    prompt = f"@everyone @here <@&{ROLE_ID}> <@{OTHER_USER}> <@!{OTHER_USER}> look at this"
    before = {m.id for m in w.fake.all_messages()}
    submits = w.sim.stats.submits
    iid = await w.video({"prompt": prompt, "negative_prompt": "@everyone again"})
    job_id = job_id_of(await w.reply(iid, "Queued"))
    await w.wait_submitted(submits + 1)
    w.sim.finish_all()
    await w.wait_notified(job_id)
    new = [m for m in w.fake.all_messages() if m.id not in before]
    assert new, "the bot posted nothing"
    for message in new:
        assert not message.notified_everyone and message.notified_role_ids == [], message
        assert set(message.notified_user_ids) <= {w.seed.user_id}, message
    final = [m for m in new if m.notified_user_ids]
    assert len(final) == 1 and final[0].id == (await w.job(job_id)).result_message_id


# ---- hostile text, stored and shown verbatim -------------------------------------------------------------

HOSTILE = [
    "Robert'); DROP TABLE jobs;-- and \" OR 1=1 --",
    "**bold** __under__ ~~strike~~ ||spoiler|| `code` ```block``` > quote # heading [link](https://evil.example)",
    "<script>alert(1)</script> &amp; %s %(x)s {0} ${x} \\n \\x00",
    "emoji 🎬 zero\u200bwidth rtl\u202eolleh combining e\u0301 CJK 視頻",
]


@pytest.mark.parametrize("text", HOSTILE, ids=["sql", "markdown", "markup", "unicode"])
async def test_hostile_text_is_stored_and_shown_verbatim(world: BotWorld, text: str) -> None:
    w = world
    submits = w.sim.stats.submits
    iid = await w.video({"prompt": text, "negative_prompt": text[::-1]})
    job_id = job_id_of(await w.reply(iid, "Queued"))
    job = await w.job(job_id)
    assert job.params["prompt"] == text
    assert job.params["negative_prompt"] == text[::-1]
    await w.wait_submitted(submits + 1)
    task = w.sim.stats.tasks[job.task_uuid].body
    assert task["positivePrompt"] == text  # Runware gets exactly what the member typed
    w.sim.finish_all()
    await w.wait_notified(job_id)
    final = w.fake.message((await w.job(job_id)).result_message_id)
    # Markdown is escaped, so Discord shows the characters as typed (nothing turns bold or hidden).
    assert final.embeds[0]["description"] == discord.utils.escape_markdown(text)
    assert len(await jobs_by_state(w.bot.db, None, 1000)) >= 1  # the tables are all still there
