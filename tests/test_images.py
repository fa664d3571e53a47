"""bot.images against real images made here with Pillow (no fixtures on disk)."""

from __future__ import annotations

import base64
import io
import random
import struct
import zlib

import pytest
from PIL import Image

from bot.errors import InvalidInput
from bot.images import (
    MAX_IMAGE_BYTES,
    CheckedImage,
    check_frame_pair,
    check_image,
    check_image_async,
)

FORMATS = ["PNG", "JPEG", "WEBP"]


def make(fmt: str, size: tuple[int, int], mode: str = "RGB", color=(40, 120, 200), **save) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color if mode in ("RGB", "RGBA") else 0).save(out, fmt, **save)
    return out.getvalue()


def noisy(fmt: str, size: tuple[int, int]) -> bytes:
    """An image whose encoded bytes are spread over the whole file (so cutting it loses pixels)."""
    rnd = random.Random(7)
    im = Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    im.save(out, fmt)
    return out.getvalue()


def refused(data: bytes, field: str = "first_frame", **kw) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        check_image(data, field=field, **kw)
    err = info.value
    assert err.field == field
    assert f"`{field}`" in err.message
    return err


def decoded(img: CheckedImage) -> Image.Image:
    im = Image.open(io.BytesIO(img.data))
    im.load()
    return im


@pytest.mark.parametrize("fmt", FORMATS)
def test_accepted_format_kept_byte_for_byte(fmt):
    data = make(fmt, (640, 480))
    img = check_image(data, field="first_frame")
    assert (img.format, img.width, img.height) == (fmt, 640, 480)
    assert img.mime == {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[fmt]
    assert img.data == data  # nothing to change: the original bytes go to Runware
    assert img.aspect == pytest.approx(640 / 480)
    prefix = f"data:{img.mime};base64,"
    assert img.data_uri().startswith(prefix)
    assert base64.b64decode(img.data_uri()[len(prefix):]) == data


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(299, 400), (400, 299), (200, 180)])
def test_too_small_refused(fmt, size):
    err = refused(make(fmt, size))
    w, h = size
    assert f"image is {w}x{h} px" in err.message
    assert "at least 300 px on each side" in err.message


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(300, 300), (750, 300), (300, 750), (2048, 2048), (2048, 820)])
def test_exactly_at_limits_accepted_unchanged(fmt, size):
    data = make(fmt, size)
    img = check_image(data, field="first_frame")
    assert (img.width, img.height) == size
    assert img.data == data


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("size", "expected"),
    [((4096, 2048), (2048, 1024)), ((2000, 3000), (1365, 2048)), ((2049, 2049), (2048, 2048))],
)
def test_too_large_scaled_down_keeping_aspect(fmt, size, expected):
    img = check_image(make(fmt, size), field="first_frame")
    assert (img.format, img.width, img.height) == (fmt, *expected)
    im = decoded(img)
    assert im.format == fmt and im.size == expected
    assert img.aspect == pytest.approx(size[0] / size[1], rel=0.001)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(751, 300), (300, 751), (2600, 1000), (1000, 2600)])
def test_extreme_aspect_refused(fmt, size):
    err = refused(make(fmt, size))
    assert f"{size[0]}x{size[1]} px" in err.message
    assert "between 1:2.5 and 2.5:1" in err.message


def test_palette_png_with_transparency_scaled_keeps_alpha():
    out = io.BytesIO()
    im = Image.new("P", (3000, 1500), 3)
    im.putpalette([c for i in range(4) for c in (i * 60, 100, 200)])
    im.paste(1, (0, 0, 1500, 1500))
    im.save(out, "PNG", transparency=3)
    assert Image.open(io.BytesIO(out.getvalue())).convert("RGBA").getpixel((2000, 10))[3] == 0
    img = check_image(out.getvalue(), field="first_frame")
    im = decoded(img)
    assert im.size == (2048, 1024) and im.format == "PNG"
    rgba = im.convert("RGBA")
    assert rgba.getpixel((10, 10)) == (60, 100, 200, 255)
    assert rgba.getpixel((2000, 10))[3] == 0


def test_sixteen_bit_grey_png_scaled_keeps_its_tone():
    out = io.BytesIO()
    Image.new("I;16", (3000, 2000), 40000).save(out, "PNG")
    im = decoded(check_image(out.getvalue(), field="first_frame"))
    assert im.size == (2048, 1365) and im.mode == "L"
    assert im.getpixel((100, 100)) == 40000 // 256  # mid grey, not clipped to white


def test_cmyk_jpeg_scaled_stays_jpeg():
    img = check_image(make("JPEG", (3000, 2000), mode="CMYK"), field="first_frame")
    assert decoded(img).size == (2048, 1365) and img.format == "JPEG"


def test_text_file_named_png_refused(tmp_path):
    path = tmp_path / "cat.png"
    path.write_text("this is not an image, whatever the name says\n")
    err = refused(path.read_bytes())
    assert "not a recognised image" in err.message
    assert "PNG, JPEG or WEBP" in err.message


def test_empty_file_refused():
    assert "not a recognised image" in refused(b"").message


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_refused(fmt):
    data = noisy(fmt, (400, 400))
    err = refused(data[: len(data) * 2 // 3])
    assert f"the {fmt} image could not be decoded" in err.message
    assert "truncated or damaged" in err.message


def test_corrupt_png_body_refused():
    data = bytearray(noisy("PNG", (400, 400)))
    data[200:260] = b"\x00" * 60  # damage IDAT content (CRC and zlib stream no longer agree)
    assert "could not be decoded" in refused(bytes(data)).message


def _frames(n: int, size=(400, 400)) -> list[Image.Image]:
    return [Image.new("RGB", size, (i * 60 % 256, 255 - i * 60 % 256, 30)) for i in range(n)]


def test_animated_gif_refused_as_gif():
    out = io.BytesIO()
    first, *rest = _frames(3)
    first.save(out, "GIF", save_all=True, append_images=rest, duration=100, loop=0)
    err = refused(out.getvalue())
    assert err.value == "GIF"
    assert "GIF images are not accepted" in err.message
    assert "allowed: PNG, JPEG or WEBP images" in err.message


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_png_and_webp_refused(fmt):
    out = io.BytesIO()
    first, *rest = _frames(3)
    first.save(out, fmt, save_all=True, append_images=rest, duration=100, loop=0)
    assert Image.open(io.BytesIO(out.getvalue())).n_frames == 3  # the test data really is animated
    err = refused(out.getvalue())
    assert f"the {fmt} image is animated" in err.message
    assert "a still (single-frame) image" in err.message


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_still_formats_refused_naming_allowed(fmt):
    err = refused(make(fmt, (400, 400)), field="last_frame")
    assert err.value == fmt
    assert f"`last_frame`: {fmt} images are not accepted; allowed: PNG, JPEG or WEBP images." == err.message


def test_multi_picture_jpeg_is_a_still_photo():
    # Phones save JPEGs with extra pictures (MPO); that is not an animation.
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 0, 0)).save(
        out, "MPO", save_all=True, append_images=[Image.new("RGB", (160, 120))])
    assert Image.open(io.BytesIO(out.getvalue())).n_frames == 2
    img = check_image(out.getvalue(), field="first_frame")
    assert (img.format, img.mime, img.width, img.height) == ("JPEG", "image/jpeg", 640, 480)


def _exif_rotated_jpeg(size: tuple[int, int], orientation: int) -> bytes:
    w, h = size
    im = Image.new("RGB", size, (255, 0, 0))
    im.paste((0, 0, 255), (w // 2, 0, w, h))  # left half red, right half blue as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif, quality=95)
    return out.getvalue()


def test_exif_orientation_applied():
    data = _exif_rotated_jpeg((400, 300), 6)
    img = check_image(data, field="first_frame")
    assert (img.width, img.height) == (300, 400)
    assert img.data != data
    im = decoded(img)
    assert im.size == (300, 400)
    assert im.getexif().get(0x0112) in (None, 1)  # not rotated a second time by the viewer
    # Orientation 6 turns the stored image 90 degrees clockwise: its left (red) half ends on top.
    top, bottom = im.getpixel((150, 50)), im.getpixel((150, 350))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_rotation_checked_against_aspect_after_rotation():
    img = check_image(_exif_rotated_jpeg((700, 300), 8), field="first_frame")
    assert (img.width, img.height) == (300, 700)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_header_claiming_huge_dimensions_refused():
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    err = refused(data)
    assert "decompression bomb" in err.message
    assert "at most 50 megapixels" in err.message


def test_small_file_with_huge_decoded_size_refused():
    out = io.BytesIO()
    Image.new("1", (8000, 8000)).save(out, "PNG")  # 64 megapixels in a few kilobytes
    assert len(out.getvalue()) < 100_000
    err = refused(out.getvalue())
    assert "8000x8000 px" in err.message and "decompression bomb" in err.message


def test_byte_cap():
    assert MAX_IMAGE_BYTES == 20 * 1024 * 1024
    data = noisy("PNG", (400, 400))
    err = refused(data, max_bytes=100 * 1024)
    assert "at most 100 KB" in err.message
    assert check_image(data, field="first_frame", max_bytes=len(data)).width == 400


async def test_async_variant_matches_sync():
    data = make("WEBP", (4000, 2000))
    img = await check_image_async(data, field="first_frame")
    assert (img.format, img.width, img.height) == ("WEBP", 2048, 1024)
    with pytest.raises(InvalidInput) as info:
        await check_image_async(make("PNG", (100, 100)), field="last_frame")
    assert info.value.field == "last_frame"


def _checked(w: int, h: int) -> CheckedImage:
    return check_image(make("PNG", (w, h)), field="first_frame")


def test_frame_pair_within_tolerance_accepted():
    check_frame_pair(_checked(1280, 720), _checked(1300, 720))  # 1.6 % apart
    check_frame_pair(_checked(1280, 720), _checked(640, 360))  # same aspect, other size
    check_frame_pair(_checked(1000, 1000), _checked(1040, 1000))  # 4 % apart


def test_frame_pair_outside_tolerance_refused():
    with pytest.raises(InvalidInput) as info:
        check_frame_pair(_checked(1280, 720), _checked(1000, 720))
    err = info.value
    assert err.field == "last_frame"
    assert err.message.startswith("`last_frame`: last frame is 1000x720 px")
    assert "within 5%" in err.message and "1280x720 px" in err.message
    with pytest.raises(InvalidInput):
        check_frame_pair(_checked(1000, 1000), _checked(1000, 1060))  # 6 % apart, portrait side
