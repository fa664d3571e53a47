"""Fitting videos to a byte limit and taking last frames, through the real worker processes."""

from __future__ import annotations

import asyncio
import io
import math
import struct
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops

from bot.services import media
from bot.services.media import CannotFit, CorruptVideo, MediaWorkers, NoFrames, WorkerFailed
from bot.services.media_ops import plan_size
from bot.simulator.media import MIB, build_video


def decoded(path: Path) -> tuple[av.container.InputContainer, list[av.VideoFrame]]:
    container = av.open(str(path))
    return container, list(container.decode(video=0))


def clip_with_sound(path: Path, seconds: int = 2, fps: int = 24) -> None:
    """A small H.264 + AAC clip: a tone under a moving gradient."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.bit_rate = 2_000_000
        audio = out.add_stream("aac", rate=44100)
        audio.layout = "mono"
        for i in range(seconds * fps):
            image = Image.linear_gradient("L").resize((320, 240)).rotate(i * 3).convert("RGB")
            frame = av.VideoFrame.from_image(image)
            frame.pts = i
            for p in video.encode(frame):
                out.mux(p)
        for start in range(0, seconds * 44100, 1024):
            frame = av.AudioFrame(format="s16", layout="mono", samples=1024)
            frame.planes[0].update(b"".join(struct.pack("<h", int(6000 * math.sin((start + k) / 15)))
                                            for k in range(1024)))
            frame.sample_rate, frame.pts = 44100, start
            for p in audio.encode(frame):
                out.mux(p)
        for stream in (video, audio):
            for p in stream.encode():
                out.mux(p)


async def test_a_large_mp4_is_fitted_under_the_limit_for_its_whole_duration(tmp_path):
    src = tmp_path / "big.mp4"
    src.write_bytes(build_video(640, 360, 5, 30, "MP4", 2 * MIB))
    limit = MIB
    fitted = await MediaWorkers().fit(src, tmp_path / "fit.mp4", limit)
    assert fitted.size == fitted.path.stat().st_size <= limit
    assert fitted.source_format == "MP4"
    container, frames = decoded(fitted.path)
    assert container.format.name.startswith("mov,mp4")
    assert container.streams.video[0].codec_context.name == "h264"
    assert len(frames) == 150  # all 5 s at 30 fps
    assert container.duration / av.time_base == pytest.approx(5.0, abs=0.1)
    assert not list(tmp_path.glob("*.part"))


async def test_sound_is_kept_as_aac(tmp_path):
    src = tmp_path / "sound.mp4"
    clip_with_sound(src)
    limit = src.stat().st_size // 2
    fitted = await MediaWorkers().fit(src, tmp_path / "fit.mp4", limit)
    assert fitted.size <= limit
    container = av.open(str(fitted.path))
    assert [s.codec_context.name for s in container.streams] == ["h264", "aac"]
    samples = sum(frame.samples for frame in container.decode(audio=0))
    assert samples / 44100 == pytest.approx(2.0, abs=0.1)


async def test_webm_is_fitted_into_mp4_and_does_not_balloon(tmp_path):
    src = tmp_path / "clip.webm"
    src.write_bytes(build_video(320, 180, 2, 30, "WEBM", 300_000))
    fitted = await MediaWorkers().fit(src, tmp_path / "fit.mp4", 200_000)
    assert fitted.source_format == "WEBM" and fitted.size <= 200_000
    container, frames = decoded(fitted.path)
    assert container.streams.video[0].codec_context.name == "h264" and len(frames) == 60
    # Under the limit but not MP4: converted at about the source's own rate, not the limit's.
    small = await MediaWorkers().fit(src, tmp_path / "small.mp4", 10 * MIB)
    assert small.size <= src.stat().st_size * 1.5  # not the 10 MiB the limit would allow


def test_sizes_step_down_1080_720_480():
    assert plan_size(1920, 1080, 24, 8_000_000) == (1920, 1080)
    assert plan_size(1920, 1080, 24, 1_500_000) == (1280, 720)
    assert plan_size(1080, 1920, 24, 600_000) == (480, 852)
    assert plan_size(1920, 1080, 24, 100_000) is None


async def test_a_video_that_cannot_fit_says_so(tmp_path):
    src = tmp_path / "big.mp4"
    src.write_bytes(build_video(640, 360, 5, 30, "MP4", MIB))
    with pytest.raises(CannotFit, match="cannot be made to fit in 0.1 MB"):
        await MediaWorkers().fit(src, tmp_path / "fit.mp4", 80_000)
    assert not (tmp_path / "fit.mp4").exists()


async def test_corrupt_and_frameless_videos_are_typed_errors(tmp_path):
    good = build_video(320, 180, 1, 30, "MP4", 200_000)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(good[: len(good) // 3])  # the index (moov) is at the end: cut off
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    workers = MediaWorkers()
    for path in (broken, garbage):
        with pytest.raises(CorruptVideo, match="damaged"):
            await workers.fit(path, tmp_path / "out.mp4", 100_000)
        with pytest.raises(CorruptVideo):
            await workers.last_frame(path)
    sound_only = tmp_path / "sound.m4a"
    with av.open(str(sound_only), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame(format="s16", layout="mono", samples=1024)
        frame.planes[0].update(bytes(2048))
        frame.sample_rate, frame.pts = 8000, 0
        for p in [*stream.encode(frame), *stream.encode()]:
            out.mux(p)
    with pytest.raises(NoFrames, match="no video"):
        await workers.fit(sound_only, tmp_path / "out.mp4", 100_000)
    with pytest.raises(NoFrames):
        await workers.last_frame(sound_only)


async def test_a_worker_killed_midway_is_a_clear_error(tmp_path, monkeypatch):
    src = tmp_path / "big.mp4"
    src.write_bytes(build_video(320, 180, 2, 30, "MP4", 400_000))
    monkeypatch.setenv("KLINGBOT_FAILPOINT", "during_transcode")  # the worker kills itself at frame 10
    with pytest.raises(WorkerFailed, match="stopped unexpectedly.*killed by SIGKILL"):
        await MediaWorkers().fit(src, tmp_path / "fit.mp4", 200_000)
    assert not (tmp_path / "fit.mp4").exists()


async def test_a_hung_worker_is_stopped(tmp_path, monkeypatch):
    src = tmp_path / "big.mp4"
    src.write_bytes(build_video(640, 360, 5, 30, "MP4", 2 * MIB))
    monkeypatch.setattr(media, "FIT_TIMEOUT_S", 0.05)
    with pytest.raises(WorkerFailed, match="took longer than"):
        await MediaWorkers().fit(src, tmp_path / "fit.mp4", MIB)


async def test_concurrency_is_capped(tmp_path, monkeypatch):
    src = tmp_path / "clip.mp4"
    src.write_bytes(build_video(320, 180, 1, 30, "MP4", 200_000))
    active = peak = started = 0
    real_exec = asyncio.create_subprocess_exec

    async def counting_exec(*args, **kwargs):
        nonlocal active, peak, started
        active += 1
        started += 1
        peak = max(peak, active)
        proc = await real_exec(*args, **kwargs)
        real_communicate = proc.communicate

        async def communicate():
            nonlocal active
            try:
                return await real_communicate()
            finally:
                active -= 1

        proc.communicate = communicate
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", counting_exec)
    for concurrency, expected in ((1, 1), (2, 2)):
        active = peak = started = 0
        workers = MediaWorkers(concurrency=concurrency)
        await asyncio.gather(*(workers.fit(src, tmp_path / f"fit{i}.mp4", 100_000) for i in range(3)))
        assert (started, peak) == (3, expected)


async def test_last_frame_is_the_videos_last_picture(tmp_path):
    src = tmp_path / "clip.mp4"
    src.write_bytes(build_video(1280, 720, 5, 30, "MP4", 3 * MIB))
    png = await MediaWorkers().last_frame(src)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (1280, 720)
    _, frames = decoded(src)
    expected = frames[-1].to_image()
    assert ImageChops.difference(image.convert("RGB"), expected).getbbox() is None
    assert ImageChops.difference(image.convert("RGB"), frames[-2].to_image()).getbbox() is not None

