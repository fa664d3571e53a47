"""The videos the simulator serves at each ``videoURL``, made with PyAV (no media file ships).

By default every result is one small clip (64x64, 1 s), so tests and the sandbox stay fast. With a
size (``Simulator(video_mb=N)``, ``klingbot simulator --video-mb N``) each result is a video of
about N MiB at the task's width, height and duration and the model's frame rate, in the task's
output format, as Kling's real results are: that is what makes the bot fit videos to Discord's
limit. Each distinct video is made once per process, then cached.
"""

from __future__ import annotations

import functools
import io
import random
from fractions import Fraction

import av

MIB = 1024 * 1024
SMALL = (64, 64, 1, 12)  # width, height, seconds, fps of the default clip
# Both encoders land over their target on noise (headers, the container; VP9 more so).
SIZE_CORRECTION = {"libx264": 0.93, "libvpx-vp9": 0.78}

_CONTAINERS = {"MP4": ("mp4", "libx264"), "MOV": ("mov", "libx264"), "WEBM": ("webm", "libvpx-vp9")}
CONTENT_TYPES = {"MP4": "video/mp4", "MOV": "video/quicktime", "WEBM": "video/webm"}
EXTENSIONS = {"MP4": "mp4", "MOV": "mov", "WEBM": "webm"}


def build_video(width: int, height: int, seconds: float, fps: int, fmt: str = "MP4",
                target_bytes: int | None = None) -> bytes:
    """One clip (uncached). With ``target_bytes``: noise at the bitrate that makes about that
    size (noise, because nothing else is incompressible enough to hit a size with the fastest
    encoder settings); without: a drifting gradient at a low bitrate."""
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError("width and height must be even and at least 2")
    if seconds <= 0 or fps < 1:
        raise ValueError("seconds must be positive and fps at least 1")
    if fmt not in _CONTAINERS:
        raise ValueError(f"format must be one of {', '.join(_CONTAINERS)}")
    container_name, codec = _CONTAINERS[fmt]
    frames = max(1, round(seconds * fps))
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_name) as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)  # both codecs are video codecs
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if target_bytes is not None:
            bitrate = int(target_bytes * 8 * SIZE_CORRECTION[codec] / (frames / fps))
            stream.bit_rate = bitrate
            stream.options = _sized_options(codec, bitrate, fps)
            pictures = _noise(width, height, frames, amplitude=bitrate / (width * height * fps))
        else:
            stream.options = {"preset": "ultrafast"} if codec == "libx264" else {"deadline": "realtime",
                                                                                  "cpu-used": "8"}
            pictures = _gradient(width, height, frames)
        for index, picture in enumerate(pictures):
            picture.pts = index
            picture.time_base = Fraction(1, fps)
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def _sized_options(codec: str, bitrate: int, fps: int) -> dict[str, object]:
    kbps = max(1, bitrate // 1000)
    if codec == "libx264":
        return {"preset": "ultrafast", "x264-params": f"keyint={fps}:vbv-maxrate={kbps}:vbv-bufsize={kbps}"
                                                      ":nal-hrd=cbr"}
    return {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "tile-columns": "2",
            "minrate": str(bitrate), "maxrate": str(bitrate), "b": str(bitrate)}


def _picture(width: int, height: int, luma: bytes, cb: bytes, cr: bytes) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, data, plane_width in zip(frame.planes, (luma, cb, cr), (width, width // 2, width // 2),
                                        strict=True):
        if plane.line_size != plane_width:  # rows padded for alignment
            rows = len(data) // plane_width
            padding = bytes(plane.line_size - plane_width)
            data = b"".join(data[r * plane_width:(r + 1) * plane_width] + padding for r in range(rows))
        plane.update(data)
    return frame


def _noise(width: int, height: int, frames: int, amplitude: float):
    """Pictures of noise: windows into one random buffer, shifted every frame so none repeats.
    The noise is as strong as the bits per pixel call for (about 1 bpp takes full-range noise):
    weaker noise lets an encoder reach a small size without working through noise it cannot
    compress (VP9 is slow at that)."""
    rng = random.Random(width * 7919 + height)
    luma_size, chroma_size = width * height, (width // 2) * (height // 2)
    strength = min(1.0, max(0.02, amplitude))
    table = bytes(max(0, min(255, round(128 + (v - 128) * strength))) for v in range(256))
    luma_pool = rng.randbytes(luma_size * 2).translate(table)
    chroma_pool = rng.randbytes(chroma_size * 3).translate(table)
    for index in range(frames):
        y = (index * 7919) % luma_size
        c = (index * 331) % chroma_size
        yield _picture(width, height, luma_pool[y:y + luma_size], chroma_pool[c:c + chroma_size],
                       chroma_pool[c + chroma_size:c + 2 * chroma_size])


def _gradient(width: int, height: int, frames: int):
    for index in range(frames):
        shift = index * 4
        luma = bytes(16 + (x * 2 + y + shift) % 220 for y in range(height) for x in range(width))
        chroma_size = (width // 2) * (height // 2)
        cb = bytes([64 + 128 * index // max(frames, 1)]) * chroma_size
        cr = bytes([192 - 128 * index // max(frames, 1)]) * chroma_size
        yield _picture(width, height, luma, cb, cr)


@functools.lru_cache(maxsize=16)
def make_video(width: int, height: int, seconds: float, fps: int, fmt: str = "MP4",
               target_bytes: int | None = None) -> bytes:
    """A clip made once per process and set of arguments, then served from memory."""
    return build_video(width, height, seconds, fps, fmt, target_bytes)


def make_small(fmt: str = "MP4") -> bytes:
    """The default clip every result gets when no size is asked for."""
    width, height, seconds, fps = SMALL
    return make_video(width, height, seconds, fps, fmt)
