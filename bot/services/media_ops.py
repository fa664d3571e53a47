"""The PyAV work behind fitting a video to a size limit and taking its last frame.

These functions block for seconds and run FFmpeg's C code, so the bot never calls them on its
event loop: ``bot.services.media`` runs them in a worker process (``python -m
bot.services.media_ops``), where a crash or a hang in FFmpeg costs that process only. Each one
answers with a plain dict (JSON on the worker's stdout): ``{"ok": true, ...}`` or ``{"ok": false,
"kind": ..., "message": ...}``; kinds are ``corrupt``, ``no_frames`` and ``cannot_fit``.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from bot import failpoints

MIB = 1024 * 1024
# Share of the limit the video may plan for: x264's rate control overshoots a little, and the
# container (moov index, one sample entry per frame) takes its part.
SIZE_MARGIN = 0.90
CONTAINER_OVERHEAD = 16 * 1024
AUDIO_BITRATE = 96_000
# Short sides tried in order, and the least bits per pixel each must get before stepping down:
# below ~0.04 bpp H.264 smears motion into blocks.
STEPS = (1080, 720, 480)
MIN_BITS_PER_PIXEL = 0.04
MIN_VIDEO_BITRATE = 150_000  # below this even 480p is not worth watching: the link is better
ATTEMPTS = 3
# The fastest x264 preset: a 10 s 1080p result must fit in about 10 s on 2 cores (bench: transcode).
PRESET = "ultrafast"
# The frame at which a transcode killed on purpose by the crash tests dies (failpoint below).
FAILPOINT_FRAME = 10


class MediaFailure(Exception):
    """A video this module cannot use; ``kind`` tells the caller which (see the module doc)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    fps: Fraction
    duration_s: float
    has_audio: bool
    container: str  # FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"


def _open(src: Path) -> av.container.InputContainer:
    try:
        return av.open(str(src), "r")
    except (av.error.InvalidDataError, av.error.EOFError, UnicodeDecodeError):
        raise MediaFailure("corrupt", "the video file is damaged or incomplete (FFmpeg cannot read it)") from None
    except av.error.FFmpegError as exc:
        raise MediaFailure("corrupt", f"the video file cannot be read ({exc.strerror or exc})") from None


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise MediaFailure("no_frames", "the file has no video in it")
    return container.streams.video[0]


def probe(container: av.container.InputContainer) -> Probe:
    stream = _video_stream(container)
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:
        raise MediaFailure("no_frames", "the file's video track has no pictures")
    fps = stream.average_rate or stream.guessed_rate or Fraction(30)
    duration = 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    elif stream.frames:
        duration = stream.frames / float(fps)
    return Probe(ctx.width, ctx.height, Fraction(fps), duration, bool(container.streams.audio),
                 container.format.name)


def plan_size(width: int, height: int, fps: float, video_bitrate: float) -> tuple[int, int] | None:
    """The largest step (1080p -> 720p -> 480p, never above the source) whose bits per pixel are
    enough; 480p as the last resort while the bitrate is watchable; None when nothing is."""
    short = min(width, height)
    first = min(short, STEPS[0])
    candidates = [first, *(step for step in STEPS if step < first)]
    for side in candidates:
        w, h = _scaled(width, height, side)
        if video_bitrate / (w * h * fps) >= MIN_BITS_PER_PIXEL:
            return w, h
    if video_bitrate >= MIN_VIDEO_BITRATE:
        return _scaled(width, height, candidates[-1])
    return None


def _scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Aspect kept, the short side ``short_side``; both even (4:2:0 needs it)."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def fit(src: Path, dest: Path, limit_bytes: int) -> dict[str, Any]:
    """Write ``src`` to ``dest`` as H.264 MP4 (AAC when it has sound) of at most ``limit_bytes``."""
    with _open(src) as container:
        info = probe(container)
    if info.duration_s <= 0:
        raise MediaFailure("no_frames", "the video has no length")
    audio_bits = AUDIO_BITRATE * info.duration_s if info.has_audio else 0
    budget = (limit_bytes * SIZE_MARGIN - CONTAINER_OVERHEAD) * 8 - audio_bits
    # Never above the source's own rate: a WEBM under the limit converted to MP4 must not grow.
    video_bitrate = min(budget / info.duration_s, src.stat().st_size * 8 / info.duration_s)
    size = 0
    for _attempt in range(ATTEMPTS):
        plan = plan_size(info.width, info.height, float(info.fps), video_bitrate)
        if plan is None:
            break
        width, height = plan
        tmp = dest.with_name(dest.name + ".part")
        frames = _transcode(src, tmp, width, height, int(video_bitrate), info)
        size = tmp.stat().st_size
        if size <= limit_bytes:
            os.replace(tmp, dest)  # whole or not at all: a killed worker leaves only the .part
            return {"ok": True, "path": str(dest), "size": size, "width": width, "height": height,
                    "bitrate": int(video_bitrate), "frames": frames, "duration_s": info.duration_s,
                    "source_format": source_format(info.container, src)}
        tmp.unlink(missing_ok=True)
        video_bitrate *= 0.9 * limit_bytes / size  # it overshot: aim that much lower
    seen = f" (the smallest try was {megabytes(size)})" if size else ""
    raise MediaFailure("cannot_fit", f"a {info.duration_s:.0f} s video cannot be made to fit in "
                                     f"{megabytes(limit_bytes)} at a watchable quality{seen}")


def megabytes(size: int) -> str:
    mb = size / MIB
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


def source_format(container_name: str, src: Path) -> str:
    """MP4, WEBM or MOV as a member knows them (FFmpeg names mp4 and mov with one demuxer)."""
    if "webm" in container_name or "matroska" in container_name:
        return "WEBM"
    return "MOV" if src.suffix.lower() == ".mov" else "MP4"


def _transcode(src: Path, dest: Path, width: int, height: int, video_bitrate: int, info: Probe) -> int:
    kbps = max(1, video_bitrate // 1000)
    frames = 0
    with _open(src) as inp, av.open(str(dest), "w", format="mp4") as out:
        vin = _video_stream(inp)
        vin.thread_type = "AUTO"
        vout = out.add_stream("libx264", rate=info.fps)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.bit_rate = video_bitrate
        # The VBV caps the rate over any second, so the size follows the bitrate closely.
        vout.options = {"preset": PRESET, "x264-params": f"vbv-maxrate={kbps}:vbv-bufsize={kbps}"}
        ain = inp.streams.audio[0] if info.has_audio else None
        aout = None
        if ain is not None:
            aout = out.add_stream("aac", rate=ain.codec_context.sample_rate or 44100)
            aout.bit_rate = AUDIO_BITRATE
            if ain.codec_context.layout is not None:
                aout.layout = ain.codec_context.layout.name
        out.metadata["comment"] = "fitted by klingbot"
        streams = [vin] + ([ain] if ain is not None else [])
        try:
            for packet in inp.demux(*streams):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):  # the one video stream demuxed
                        same = (frame.width, frame.height, frame.format.name) == (width, height, "yuv420p")
                        picture = frame if same else frame.reformat(width=width, height=height, format="yuv420p")
                        picture.pts = frames
                        picture.time_base = Fraction(1) / info.fps
                        frames += 1
                        if frames == FAILPOINT_FRAME:
                            failpoints.hit("during_transcode")
                        for p in vout.encode(picture):
                            out.mux(p)
                    elif isinstance(frame, av.AudioFrame) and aout is not None:
                        frame.pts = None
                        for p in aout.encode(frame):
                            out.mux(p)
        except av.error.FFmpegError as exc:
            raise MediaFailure("corrupt", f"the video is damaged after {frames} frames "
                                          f"({exc.strerror or exc})") from None
        if frames == 0:
            raise MediaFailure("no_frames", "the video has no pictures in it")
        for stream in (vout, aout):
            if stream is not None:
                for p in stream.encode():
                    out.mux(p)
    return frames


def last_frame(src: Path, dest: Path) -> dict[str, Any]:
    """The video's last picture as PNG bytes in ``dest``."""
    with _open(src) as container:
        info = probe(container)
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        picture = None
        # Seek near the end first (the last keyframe before it) so a long video is not decoded whole;
        # if that finds nothing (no index, odd timestamps), decode from the start.
        for start in _seek_points(info):
            try:
                if start > 0:
                    container.seek(int(start * av.time_base), any_frame=False, backward=True)
                else:
                    container.seek(0)
                for frame in container.decode(stream):
                    picture = frame
            except av.error.FFmpegError as exc:
                if picture is None and start == 0:
                    raise MediaFailure("corrupt", f"the video cannot be decoded ({exc.strerror or exc})") from None
            if picture is not None:
                break
    if picture is None:
        raise MediaFailure("no_frames", "the video has no pictures in it")
    buffer = io.BytesIO()
    picture.to_image().save(buffer, format="PNG")
    dest.write_bytes(buffer.getvalue())
    return {"ok": True, "path": str(dest), "width": picture.width, "height": picture.height}


def _seek_points(info: Probe) -> list[float]:
    near_end = info.duration_s - 2.0
    return [near_end, 0.0] if near_end > 0 and math.isfinite(near_end) else [0.0]


def main(argv: list[str]) -> int:
    """``fit SRC DEST LIMIT`` or ``last-frame SRC DEST``: one JSON line on stdout."""
    try:
        if argv[:1] == ["fit"] and len(argv) == 4:
            answer = fit(Path(argv[1]), Path(argv[2]), int(argv[3]))
        elif argv[:1] == ["last-frame"] and len(argv) == 3:
            answer = last_frame(Path(argv[1]), Path(argv[2]))
        else:
            print("usage: python -m bot.services.media_ops fit SRC DEST LIMIT | last-frame SRC DEST",
                  file=sys.stderr)
            return 2
    except MediaFailure as exc:
        answer = {"ok": False, "kind": exc.kind, "message": exc.message}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
