"""The simulator's MP4: parsed box by box and bit by bit, with no decoder needed."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from bot.simulator.media import _nal, build_mp4, make_mp4

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf"}


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, payload offset, payload end) of each box in data[start:end]."""
    end = len(data) if end is None else end
    out = []
    pos = start
    while pos < end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        assert size >= 8 and pos + size <= end, f"box {kind!r} overruns its parent"
        out.append((kind, pos + 8, pos + size))
        pos += size
    assert pos == end
    return out


def tree(data: bytes, start: int = 0, end: int | None = None, path: str = "") -> dict[str, tuple[int, int]]:
    found = {}
    for kind, lo, hi in boxes(data, start, end):
        name = f"{path}/{kind.decode()}"
        found[name] = (lo, hi)
        if kind in CONTAINERS:
            found.update(tree(data, lo, hi, name))
    return found


STBL = "/moov/trak/mdia/minf/stbl"


def table(data: bytes, boxes_: dict, name: str) -> bytes:
    lo, hi = boxes_[f"{STBL}/{name}"]
    return data[lo + 4:hi]  # skip version and flags


class BitReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | ((self.data[self.pos // 8] >> (7 - self.pos % 8)) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def unescape(nal: bytes) -> bytes:
    """Drop emulation-prevention bytes (00 00 03 -> 00 00)."""
    out, zeros = bytearray(), 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def check_escaped(nal: bytes) -> None:
    for i in range(len(nal) - 2):
        assert not (nal[i] == 0 and nal[i + 1] == 0 and nal[i + 2] <= 2), "start-code emulation in a NAL"


@pytest.mark.parametrize(("width", "height", "frames", "fps"), [(64, 64, 12, 12), (128, 96, 5, 5)])
def test_box_tree_and_samples(width, height, frames, fps):
    data = build_mp4(width, height, frames, fps)
    found = tree(data)
    top = [kind for kind, _, _ in boxes(data)]
    assert top == [b"ftyp", b"moov", b"mdat"]
    lo, hi = found["/ftyp"]
    assert data[lo:lo + 4] == b"isom"
    assert b"avc1" in [data[i:i + 4] for i in range(lo + 8, hi, 4)]

    for name in ("mvhd", "trak/tkhd", "trak/mdia/mdhd", "trak/mdia/hdlr", "trak/mdia/minf/vmhd",
                 "trak/mdia/minf/dinf/dref"):
        assert f"/moov/{name}" in found
    lo, _ = found["/moov/trak/mdia/hdlr"]
    assert data[lo + 8:lo + 12] == b"vide"
    lo, hi = found["/moov/trak/tkhd"]
    assert struct.unpack(">II", data[hi - 8:hi]) == (width << 16, height << 16)

    stsd = table(data, found, "stsd")
    (count,) = struct.unpack(">I", stsd[:4])
    [(kind, entry_lo, entry_hi)] = boxes(stsd, 4)
    assert count == 1 and kind == b"avc1"
    assert struct.unpack(">HH", stsd[entry_lo + 24:entry_lo + 28]) == (width, height)
    [(kind, avcc_lo, avcc_hi)] = boxes(stsd, entry_lo + 78, entry_hi)
    assert kind == b"avcC"
    avcc = stsd[avcc_lo:avcc_hi]
    assert avcc[0] == 1 and avcc[1] == 66 and avcc[4] & 3 == 3 and avcc[5] & 31 == 1
    (sps_len,) = struct.unpack(">H", avcc[6:8])
    sps = avcc[8:8 + sps_len]
    assert avcc[8 + sps_len] == 1
    (pps_len,) = struct.unpack(">H", avcc[9 + sps_len:11 + sps_len])
    pps = avcc[11 + sps_len:11 + sps_len + pps_len]
    assert sps[0] & 31 == 7 and pps[0] & 31 == 8
    check_escaped(sps[1:])
    bits = BitReader(unescape(sps[1:]))
    assert (bits.u(8), bits.u(8), bits.u(8)) == (66, 0xC0, avcc[3])
    assert [bits.ue(), bits.ue(), bits.ue(), bits.ue(), bits.u(1)] == [0, 0, 2, 1, 0]
    assert ((bits.ue() + 1) * 16, (bits.ue() + 1) * 16) == (width, height)

    stts = table(data, found, "stts")
    assert struct.unpack(">III", stts) == (1, frames, 1000)
    lo, _ = found["/moov/trak/mdia/mdhd"]
    assert struct.unpack(">II", data[lo + 12:lo + 20]) == (fps * 1000, frames * 1000)
    stsz = table(data, found, "stsz")
    default_size, sample_count = struct.unpack(">II", stsz[:8])
    sizes = struct.unpack(f">{sample_count}I", stsz[8:])
    assert default_size == 0 and sample_count == frames
    stss = table(data, found, "stss")
    assert struct.unpack(f">{frames + 1}I", stss) == (frames, *range(1, frames + 1))
    assert struct.unpack(">IIII", table(data, found, "stsc")) == (1, 1, frames, 1)
    (chunks, offset) = struct.unpack(">II", table(data, found, "stco"))
    mdat_lo, mdat_hi = found["/mdat"]
    assert chunks == 1 and offset == mdat_lo
    assert sum(sizes) == mdat_hi - mdat_lo

    mbs = (width // 16) * (height // 16)
    pos = mdat_lo
    for index, size in enumerate(sizes):
        (nal_len,) = struct.unpack(">I", data[pos:pos + 4])
        assert nal_len + 4 == size  # one length-prefixed NAL per sample
        nal = data[pos + 4:pos + size]
        assert nal[0] == 0x65  # IDR slice, nal_ref_idc 3
        check_escaped(nal[1:])
        rbsp = unescape(nal[1:])
        r = BitReader(rbsp)
        assert [r.ue(), r.ue(), r.ue(), r.u(4), r.ue()] == [0, 7, 0, 0, index % 2]
        assert [r.u(1), r.u(1), r.se(), r.ue()] == [0, 0, 0, 1]
        for _ in range(mbs):
            assert r.ue() == 25  # I_PCM
            r.pos += -r.pos % 8
            samples = rbsp[r.pos // 8:r.pos // 8 + 384]
            assert len(samples) == 384 and min(samples) >= 1
            r.pos += 384 * 8
        assert rbsp[r.pos // 8:] == b"\x80"  # rbsp stop bit, nothing else
        pos += size
    assert pos == mdat_hi


def test_frames_differ_and_clip_is_cached():
    data = make_mp4()
    assert make_mp4() is data
    found = tree(data)
    sizes = struct.unpack(">12I", table(data, found, "stsz")[8:])
    mdat_lo, _ = found["/mdat"]
    first = data[mdat_lo:mdat_lo + sizes[0]]
    last = data[mdat_lo + sum(sizes[:-1]):mdat_lo + sum(sizes)]
    assert first != last  # it moves
    assert len(data) < 200_000


def test_start_code_emulation_is_escaped():
    # The gradient never produces zero runs, so check the escaping on crafted bytes.
    payload = b"\x00\x00\x01\x00\x00\x00\x00\x00\x03\x07"
    nal = _nal(0x65, payload)
    check_escaped(nal[1:])
    assert unescape(nal[1:]) == payload and nal[0] == 0x65


@pytest.mark.parametrize("args", [(60, 64, 12, 12), (64, 64, 0, 12), (64, 0, 12, 12)])
def test_bad_sizes_are_refused(args):
    with pytest.raises(ValueError):
        build_mp4(*args)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (optional check)")
def test_ffmpeg_decodes_it_cleanly(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(make_mp4())
    result = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
