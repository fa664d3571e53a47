"""First/last frame images checked by their content with Pillow (SPEC 3.2). Pure: no network, no disk.

The format is sniffed from the leading bytes before Pillow sees the data, and Pillow is then asked to
use that one decoder only, so an upload can never reach the parsers of formats we do not accept.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, ImageOps

from bot.errors import InvalidInput

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MIN_SIDE = 300
MAX_SIDE = 2048
# Aspect limits 1:2.5 .. 2.5:1 as integers so that exactly 2.5 is not lost to float rounding.
ASPECT_NUM, ASPECT_DEN = 5, 2
PAIR_TOLERANCE = 0.05
# Our own decoded-size cap, independent of Pillow's global MAX_IMAGE_PIXELS (which any other code may
# change). 50 megapixels admits 48 MP phone photos while bounding memory to ~200 MB per RGBA image.
MAX_PIXELS = 50_000_000
JPEG_QUALITY = 92
WEBP_QUALITY = 92

ALLOWED_FORMATS = "PNG, JPEG or WEBP"
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# Errors a decoder raises on damaged or hostile input (Pillow, zlib and struct underneath it).
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    mime: str
    format: str  # "PNG" | "JPEG" | "WEBP"
    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def sniff_format(data: bytes) -> str | None:
    """Name the image format from the leading bytes ("PNG", "GIF", ...), or None if unrecognised."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    # Formats we refuse, recognised only so the message can say what the file is.
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
        return "HEIC"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "AVIF"
    if data[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    if data[:4] == b"8BPS":
        return "PSD"
    return None


def _size_text(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def _undamaged(field: str, fmt: str) -> InvalidInput:
    return InvalidInput(
        field, fmt, f"a complete, undamaged {ALLOWED_FORMATS} image",
        problem=f"the {fmt} image could not be decoded (the file is truncated or damaged)",
    )


def check_image(data: bytes, *, field: str, max_bytes: int = MAX_IMAGE_BYTES) -> CheckedImage:
    """Validate one frame image; return it ready to upload (rotated, scaled down) or raise InvalidInput."""
    if len(data) > max_bytes:
        raise InvalidInput(
            field, _size_text(len(data)), f"at most {_size_text(max_bytes)}",
            problem=f"the image is {_size_text(len(data))}",
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidInput(field, "unrecognised file", f"a {ALLOWED_FORMATS} image",
                           problem="the file is not a recognised image")
    if fmt not in _MIME:
        raise InvalidInput(field, fmt, f"{ALLOWED_FORMATS} images",
                           problem=f"{fmt} images are not accepted")

    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError:
        # Pillow's own cap (twice its MAX_IMAGE_PIXELS) fired while reading the header. Between its
        # warning level and that cap it only warns; MAX_PIXELS below is lower, so ours refuses those.
        raise _bomb(field, None) from None
    except _DECODE_ERRORS:
        raise _undamaged(field, fmt) from None
    with im:
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise _bomb(field, (width, height))
        # A JPEG with extra pictures (MPO: phone photos carrying previews or depth maps) is a still
        # photo whose first picture is the image; PNG and WEBP with several frames are animations.
        if im.format != "MPO" and (getattr(im, "n_frames", 1) > 1 or getattr(im, "is_animated", False)):
            raise InvalidInput(field, f"animated {fmt}", "a still (single-frame) image",
                               problem=f"the {fmt} image is animated")
        try:
            im.load()
        except _DECODE_ERRORS:
            raise _undamaged(field, fmt) from None
        return _finish(im, data, fmt, field)


def _bomb(field: str, size: tuple[int, int] | None) -> InvalidInput:
    claimed = f"{size[0]}x{size[1]} px" if size else "too many pixels"
    return InvalidInput(
        field, claimed, f"at most {MAX_PIXELS // 1_000_000} megapixels before scaling",
        problem=f"the image claims {claimed} (refused as a possible decompression bomb)",
    )


def _finish(im: Image.Image, original: bytes, fmt: str, field: str) -> CheckedImage:
    changed = False
    try:
        orientation = im.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:
        orientation = 1  # unreadable EXIF: show the pixels as stored rather than refuse the image
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        im = ImageOps.exif_transpose(im)
        changed = True
    width, height = im.size
    if min(width, height) < MIN_SIDE:
        raise InvalidInput(field, f"{width}x{height} px", f"at least {MIN_SIDE} px on each side",
                           problem=f"image is {width}x{height} px")
    if ASPECT_DEN * width > ASPECT_NUM * height or ASPECT_DEN * height > ASPECT_NUM * width:
        raise InvalidInput(
            field, f"{width}x{height} px", "an aspect ratio between 1:2.5 and 2.5:1",
            problem=f"image is {width}x{height} px (aspect {width / height:.2f}:1)",
        )
    if max(width, height) > MAX_SIDE:
        im = _scale_down(im)
        width, height = im.size
        changed = True
    data = _encode(im, fmt) if changed else original
    return CheckedImage(data=data, mime=_MIME[fmt], format=fmt, width=width, height=height)


def _scale_down(im: Image.Image) -> Image.Image:
    width, height = im.size
    scale = MAX_SIDE / max(width, height)
    size = (min(MAX_SIDE, max(1, round(width * scale))), min(MAX_SIDE, max(1, round(height * scale))))
    # Palette and bilevel images would be resampled nearest-neighbour only; resample in full colour.
    return _eight_bit(im).resize(size, Image.Resampling.LANCZOS)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _eight_bit(im: Image.Image) -> Image.Image:
    """RGB, RGBA, L, LA or CMYK: modes every encoder here can resample and write."""
    if im.mode in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return im
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit grey: keep the tonal range (a plain convert would clip everything above 255 to white).
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if im.mode == "F":
        return im.convert("L")
    return im.convert("RGBA" if _has_alpha(im) else "RGB")


def _encode(im: Image.Image, fmt: str) -> bytes:
    """Re-encode in the same format. EXIF is dropped: its orientation has been applied to the pixels."""
    out = io.BytesIO()
    icc = im.info.get("icc_profile")
    extra = {"icc_profile": icc} if icc else {}
    im = _eight_bit(im)
    if fmt == "JPEG":
        if im.mode in ("RGBA", "LA"):
            im = im.convert("RGB" if im.mode == "RGBA" else "L")
        im.save(out, "JPEG", quality=JPEG_QUALITY, **extra)
    elif fmt == "WEBP":
        if im.mode in ("L", "LA", "CMYK"):
            im = im.convert("RGBA" if im.mode == "LA" else "RGB")
        im.save(out, "WEBP", quality=WEBP_QUALITY, **extra)
    else:
        if im.mode == "CMYK":
            im = im.convert("RGB")
        im.save(out, "PNG", **extra)
    return out.getvalue()


async def check_image_async(data: bytes, *, field: str, max_bytes: int = MAX_IMAGE_BYTES) -> CheckedImage:
    """check_image in a worker thread: decoding and resampling must not stall the event loop."""
    return await asyncio.to_thread(check_image, data, field=field, max_bytes=max_bytes)


def check_frame_pair(first: CheckedImage, last: CheckedImage) -> None:
    """First and last frame must share an aspect ratio within PAIR_TOLERANCE (relative)."""
    ratio = max(first.aspect, last.aspect) / min(first.aspect, last.aspect)
    if ratio - 1 > PAIR_TOLERANCE:
        raise InvalidInput(
            "last_frame", f"{last.width}x{last.height} px",
            f"the first frame's aspect ({first.width}x{first.height} px, {first.aspect:.2f}:1) "
            f"within {PAIR_TOLERANCE:.0%}",
            problem=(f"last frame is {last.width}x{last.height} px (aspect {last.aspect:.2f}:1), "
                     f"first frame is {first.width}x{first.height} px (aspect {first.aspect:.2f}:1)"),
        )
