"""Results over Discord's upload limit: fitted with PyAV and attached, the original link kept; a
video that cannot be fitted (damaged, no pictures, the worker killed) is a link with the reason."""

from __future__ import annotations

import io
import re

import av
import pytest

from bot.services import media
from bot.simulator.media import MIB, make_video
from tests.fakes.world import BotWorld, started_world


def decode_attachment(data: bytes) -> tuple[av.container.InputContainer, int]:
    container = av.open(io.BytesIO(data))
    return container, sum(1 for _ in container.decode(video=0))


async def money_and_posts(w: BotWorld) -> tuple[list[tuple[str, int]], int]:
    ledger = [(r.kind, r.amount_micro) for r in await w.ledger()]
    return ledger, len(w.result_messages())


def progress_texts(w: BotWorld) -> list[str]:
    texts = []
    for message in w.progress_messages():
        for state in [*(e.embeds for e in message.edits), message.embeds]:
            texts += [embed.get("description", "") for embed in state or []]
    return texts


async def test_a_13_mib_result_is_fitted_under_10_mib_and_keeps_its_link(tmp_path) -> None:
    async with started_world(tmp_path) as w:
        w.fake.max_upload_bytes = 10 * MIB
        w.sim.video_bytes = 13 * MIB
        await w.video({"prompt": "a red fox running through fresh snow"})
        await w.wait_submitted(1)
        w.sim.finish_all()
        [result] = await w.wait_result(1, timeout=120)
        [attachment] = result.attachments
        assert attachment["filename"].endswith(".mp4")
        assert len(attachment["data"]) <= 10 * MIB
        container, frames = decode_attachment(attachment["data"])
        assert frames == 150  # the whole 5 s at 30 fps
        assert container.duration / av.time_base == pytest.approx(5.0, abs=0.1)
        assert (container.streams.video[0].width, container.streams.video[0].height) == (1280, 720)
        task = next(iter(w.sim.stats.tasks.values()))
        url = task.results[0]["videoURL"]
        assert url in result.content
        assert re.search(r"fitted to the 10 MB upload limit; full quality until <t:\d+:f>", result.content)
        assert any("Fitting the video to Discord's size limit" in t for t in progress_texts(w))
        await w.wait_notified(1)
        assert await money_and_posts(w) == ([("reserve", 350_000), ("settle", 350_000)], 1)


async def test_a_webm_result_is_fitted_into_mp4_and_job_reposts_it(tmp_path) -> None:
    async with started_world(tmp_path) as w:
        w.fake.max_upload_bytes = 200_000
        w.sim.video_bytes = 300_000
        await w.video({"prompt": "a red fox running through fresh snow", "format": "WEBM", "aspect": "1:1"})
        await w.wait_submitted(1)
        w.sim.finish_all()
        [result] = await w.wait_result(1, timeout=120)
        [attachment] = result.attachments
        assert attachment["filename"].endswith(".fit.mp4") and len(attachment["data"]) <= 200_000
        container, frames = decode_attachment(attachment["data"])
        assert container.streams.video[0].codec_context.name == "h264" and frames == 150
        assert "converted from WEBM to MP4" in result.content
        await w.wait_notified(1)
        # /job re-posts the fitted file, not a link to the original.
        iid = await w.fake.send_slash("job", {"id": 1})
        await w.reply(iid, "attached", timeout=30)
        assert [a["data"] for a in w.fake.interaction_message(iid).attachments] == [attachment["data"]]


async def test_a_fit_in_progress_holds_up_neither_polling_nor_other_channels(tmp_path, monkeypatch) -> None:
    gate = tmp_path / "gate"
    monkeypatch.setenv("KLINGBOT_TEST_MEDIA_GATE", str(gate))
    monkeypatch.setattr(media, "WORKER_MODULE", "tests.slow_media_worker")  # fits wait for the gate
    async with started_world(tmp_path) as w:
        other = 1_100_000_000_000_000_099
        w.fake.add_channel(w.seed.guild_id, other, "gen-2")
        w.fake.max_upload_bytes = 200_000
        w.sim.video_bytes = 300_000
        await w.video({"prompt": "a red fox running through fresh snow"})
        await w.wait_submitted(1)
        w.sim.finish_all()
        await w.wait(lambda: any("Fitting the video to Discord's size limit" in t for t in progress_texts(w)))
        w.sim.video_bytes = None  # the next result is the small clip: it needs no fit
        iid = await w.video({"prompt": "a grey owl in the rain"}, channel_id=other)
        await w.reply(iid, "Queued as job #2")
        await w.wait_submitted(2)
        w.sim.finish_all()
        # Polled, fetched and posted while job 1's fit is still held at the gate.
        [second] = await w.wait_result(1, channel_id=other)
        assert second.attachments and not w.result_messages()
        gate.touch()
        [first] = await w.wait_result(1, timeout=60)
        assert first.attachments and len(first.attachments[0]["data"]) <= 200_000


def frameless_file() -> bytes:
    """An MP4 with sound and no video track, bigger than the test's upload limit."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.bit_rate = 256_000
        for start in range(0, 48000 * 8, 1024):
            frame = av.AudioFrame(format="s16", layout="stereo", samples=1024)
            frame.planes[0].update(bytes((start + i) * 37 % 251 for i in range(4096)))
            frame.sample_rate, frame.pts = 48000, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


CASES = {
    "corrupt": (lambda: make_video(1280, 720, 5, 30, "MP4", 300_000)[:250_000], None,
                "could not be fitted: the video file is damaged or incomplete"),
    "no frames": (frameless_file, None, "could not be fitted: the file has no video in it"),
    "killed": (None, "during_transcode", "could not be fitted: fitting the video stopped unexpectedly "
                                         "(the worker was killed by SIGKILL)"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_video_that_cannot_be_fitted_is_a_link_with_the_reason(tmp_path, monkeypatch, case) -> None:
    make_body, failpoint, reason = CASES[case]
    if failpoint:
        monkeypatch.setenv("KLINGBOT_FAILPOINT", failpoint)  # only the media worker has this point
    async with started_world(tmp_path) as w:
        w.fake.max_upload_bytes = 200_000
        w.sim.video_bytes = 300_000
        if make_body is not None:
            w.sim.faults.video_body = make_body()
            assert len(w.sim.faults.video_body) > 200_000
        await w.video({"prompt": "a red fox running through fresh snow"})
        await w.wait_submitted(1)
        w.sim.finish_all()
        [result] = await w.wait_result(1, timeout=120)
        assert result.attachments == []
        task = next(iter(w.sim.stats.tasks.values()))
        assert task.results[0]["videoURL"] in result.content
        assert reason in result.content
        assert "link expires <t:" in result.content
        await w.wait_notified(1)
        # The restart finds nothing left to do: no second post, no second charge.
        await w.stop_bot()
        await w.start_bot()
        await w.wait_notified(1)
        assert await money_and_posts(w) == ([("reserve", 350_000), ("settle", 350_000)], 1)
