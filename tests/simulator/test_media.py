"""The simulator's videos: decoded with PyAV, checked for size, resolution, duration and format."""

from __future__ import annotations

import io
import subprocess
import sys

import av
import httpx
import pytest

from bot.simulator import make_small, run_simulator
from bot.simulator.media import MIB, build_video
from tests.fakes.runware_tasks import KEY, call, poll, video_task


def decode(data: bytes) -> tuple[av.container.InputContainer, list[av.VideoFrame]]:
    container = av.open(io.BytesIO(data))
    frames = list(container.decode(video=0))
    return container, frames


def test_default_clip_is_small_valid_and_cached():
    data = make_small("MP4")
    assert make_small("MP4") is data
    container, frames = decode(data)
    assert container.streams.video[0].codec_context.name == "h264"
    assert (frames[0].width, frames[0].height, len(frames)) == (64, 64, 12)
    assert bytes(frames[0].planes[0]) != bytes(frames[-1].planes[0])  # it moves
    assert len(data) < 50_000


@pytest.mark.parametrize("fmt, demuxer, codec", [("WEBM", "matroska,webm", "vp9"),
                                                 ("MOV", "mov,mp4,m4a,3gp,3g2,mj2", "h264")])
def test_other_formats_are_real_containers(fmt, demuxer, codec):
    container, frames = decode(make_small(fmt))
    assert container.format.name == demuxer
    assert container.streams.video[0].codec_context.name == codec
    assert len(frames) == 12


def test_sized_video_has_the_size_resolution_and_duration():
    data = build_video(320, 180, 2, 30, "MP4", 1 * MIB)
    assert 0.85 * MIB <= len(data) <= 1.15 * MIB
    container, frames = decode(data)
    assert (frames[0].width, frames[0].height) == (320, 180)
    assert len(frames) == 60
    assert container.duration / av.time_base == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("args", [(63, 64, 1, 12), (64, 64, 0, 12), (64, 64, 1, 0), (64, 64, 1, 12, "AVI")])
def test_bad_arguments_are_refused(args):
    with pytest.raises(ValueError):
        build_video(*args)


async def test_served_result_follows_the_task_when_a_size_is_set():
    async with run_simulator(seed=7, video_mb=0.3) as sim, \
            httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        task = video_task(width=720, height=720, duration=5, outputFormat="WEBM")
        await call(client, sim, [task])
        sim.finish_all()
        _, body = await call(client, sim, poll(task["taskUUID"]))
        url = body["data"][0]["videoURL"]
        assert url.endswith(".webm")
        resp = await client.get(url)
        assert resp.status_code == 200 and resp.headers["content-type"] == "video/webm"
        assert 0.2 * MIB <= len(resp.content) <= 0.4 * MIB
        container, frames = decode(resp.content)
        assert container.streams.video[0].codec_context.name == "vp9"
        assert (frames[0].width, frames[0].height, len(frames)) == (720, 720, 150)  # 5 s at the model's 30 fps
        wrong_ext = await client.get(url.removesuffix(".webm") + ".mp4")
        assert wrong_ext.status_code == 404


def test_cli_refuses_a_bad_video_size():
    result = subprocess.run([sys.executable, "-m", "bot", "simulator", "--video-mb", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--video-mb" in result.stderr and "above 0" in result.stderr
