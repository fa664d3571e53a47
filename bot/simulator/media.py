"""A tiny, valid, playable MP4 made in pure Python, so the simulator ships no media file and needs
no encoder at run time.

The video is H.264 Baseline where every macroblock is I_PCM (raw samples, no prediction, no
transform): the bitstream is then only headers plus pixels, which needs no real encoder. Each frame
is an IDR picture holding one slice; the samples are muxed into ISO BMFF with the moov box first.
"""

from __future__ import annotations

import functools
import struct

_MB = 16  # macroblock side in luma samples
_LEVEL_IDC = 30  # level 3.0: room for the raw-sample bit rate of small clips
_I_PCM = 25  # mb_type of I_PCM in an I slice


class _Bits:
    """MSB-first bit writer with the Exp-Golomb codes of H.264 (clause 9.1)."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0
        self._n = 0

    def u(self, bits: int, value: int) -> None:
        for shift in range(bits - 1, -1, -1):
            self._acc = (self._acc << 1) | ((value >> shift) & 1)
            self._n += 1
            if self._n == 8:
                self._out.append(self._acc)
                self._acc = 0
                self._n = 0

    def ue(self, value: int) -> None:
        code = value + 1
        length = code.bit_length()
        self.u(length - 1, 0)
        self.u(length, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align_zero(self) -> None:
        while self._n:
            self.u(1, 0)

    def raw(self, data: bytes) -> None:
        if self._n:
            raise ValueError("raw bytes need a byte-aligned writer")
        self._out += data

    def trailing(self) -> bytes:
        """rbsp_trailing_bits: a stop bit, then zeros to the byte boundary."""
        self.u(1, 1)
        self.align_zero()
        return bytes(self._out)


def _nal(header: int, rbsp: bytes) -> bytes:
    """NAL unit with emulation prevention: no 0x000000..0x000003 may appear in the payload."""
    out = bytearray([header])
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _sps(width: int, height: int) -> bytes:
    b = _Bits()
    b.u(8, 66)  # profile_idc: Baseline
    b.u(8, 0xC0)  # constraint_set0 and set1: also decodable as Main
    b.u(8, _LEVEL_IDC)
    b.ue(0)  # seq_parameter_set_id
    b.ue(0)  # log2_max_frame_num_minus4
    b.ue(2)  # pic_order_cnt_type 2: output order = decoding order
    b.ue(1)  # max_num_ref_frames
    b.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    b.ue(width // _MB - 1)
    b.ue(height // _MB - 1)
    b.u(1, 1)  # frame_mbs_only_flag
    b.u(1, 1)  # direct_8x8_inference_flag
    b.u(1, 0)  # frame_cropping_flag
    b.u(1, 0)  # vui_parameters_present_flag: timing lives in the MP4
    return _nal(0x67, b.trailing())


def _pps() -> bytes:
    b = _Bits()
    b.ue(0)  # pic_parameter_set_id
    b.ue(0)  # seq_parameter_set_id
    b.u(1, 0)  # entropy_coding_mode_flag: CAVLC
    b.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    b.ue(0)  # num_slice_groups_minus1
    b.ue(0)  # num_ref_idx_l0_default_active_minus1
    b.ue(0)  # num_ref_idx_l1_default_active_minus1
    b.u(1, 0)  # weighted_pred_flag
    b.u(2, 0)  # weighted_bipred_idc
    b.se(0)  # pic_init_qp_minus26
    b.se(0)  # pic_init_qs_minus26
    b.se(0)  # chroma_qp_index_offset
    b.u(1, 1)  # deblocking_filter_control_present_flag (so slices can switch it off)
    b.u(1, 0)  # constrained_intra_pred_flag
    b.u(1, 0)  # redundant_pic_cnt_present_flag
    return _nal(0x68, b.trailing())


def _clip(value: float) -> int:
    # Early H.264 editions forbid PCM sample 0; staying in 1..255 keeps every decoder happy.
    return max(1, min(255, int(value)))


def _idr_slice(width: int, height: int, index: int, frames: int) -> bytes:
    """One IDR picture in one slice, every macroblock I_PCM, showing a drifting colour gradient."""
    b = _Bits()
    b.ue(0)  # first_mb_in_slice
    b.ue(7)  # slice_type: I (all slices of the picture)
    b.ue(0)  # pic_parameter_set_id
    b.u(4, 0)  # frame_num (log2_max_frame_num = 4); 0 in an IDR picture
    b.ue(index % 2)  # idr_pic_id: consecutive IDR pictures must differ
    b.u(1, 0)  # no_output_of_prior_pics_flag
    b.u(1, 0)  # long_term_reference_flag
    b.se(0)  # slice_qp_delta
    b.ue(1)  # disable_deblocking_filter_idc: nothing to smooth in raw samples
    phase = index * 256 // max(frames, 1)
    cb = _clip(64 + 128 * index / max(frames - 1, 1))
    cr = _clip(192 - 128 * index / max(frames - 1, 1))
    chroma = bytes([cb]) * 64 + bytes([cr]) * 64
    for mby in range(height // _MB):
        for mbx in range(width // _MB):
            b.ue(_I_PCM)
            b.align_zero()  # pcm_alignment_zero_bit
            luma = bytearray()
            for y in range(mby * _MB, mby * _MB + _MB):
                for x in range(mbx * _MB, mbx * _MB + _MB):
                    luma.append(_clip(16 + ((x * 2 + y + phase) % 220)))
            b.raw(bytes(luma))
            b.raw(chroma)
    return _nal(0x65, b.trailing())


# ---- ISO BMFF -----------------------------------------------------------------------------------

_MATRIX = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _avc1(width: int, height: int, sps: bytes, pps: bytes) -> bytes:
    avcc = _box(
        b"avcC",
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]),  # 4-byte NAL lengths, one SPS
        struct.pack(">H", len(sps)), sps,
        bytes([1]), struct.pack(">H", len(pps)), pps,
    )
    name = b"klingbot simulator"
    return _box(
        b"avc1",
        bytes(6), struct.pack(">H", 1),  # reserved, data_reference_index
        bytes(16),  # pre_defined and reserved
        struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1),
        bytes([len(name)]) + name.ljust(31, b"\0"),
        struct.pack(">Hh", 0x18, -1),
        avcc,
    )


def _moov(width: int, height: int, fps: int, sizes: list[int], mdat_offset: int,
          sps: bytes, pps: bytes) -> bytes:
    frames = len(sizes)
    timescale = fps * 1000
    media_duration = frames * 1000
    movie_duration = frames * 1000 // fps  # movie timescale is 1000 (ms)
    mvhd = _full(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, movie_duration),
        struct.pack(">IH", 0x10000, 0x100), bytes(10), _MATRIX, bytes(24),
        struct.pack(">I", 2),  # next_track_ID
    )
    tkhd = _full(
        b"tkhd", 0, 3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, 1, 0, movie_duration),
        bytes(8), struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = _full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, media_duration, 0x55C4, 0))
    hdlr = _full(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\0")
    vmhd = _full(b"vmhd", 0, 1, bytes(8))
    dinf = _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1)))
    stbl = _box(
        b"stbl",
        _full(b"stsd", 0, 0, struct.pack(">I", 1), _avc1(width, height, sps, pps)),
        _full(b"stts", 0, 0, struct.pack(">III", 1, frames, 1000)),
        _full(b"stss", 0, 0, struct.pack(f">I{frames}I", frames, *range(1, frames + 1))),
        _full(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, frames, 1)),  # one chunk holds all
        _full(b"stsz", 0, 0, struct.pack(f">II{frames}I", 0, frames, *sizes)),
        _full(b"stco", 0, 0, struct.pack(">II", 1, mdat_offset)),
    )
    minf = _box(b"minf", vmhd, dinf, stbl)
    trak = _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))
    return _box(b"moov", mvhd, trak)


def build_mp4(width: int = 64, height: int = 64, frames: int = 12, fps: int = 12) -> bytes:
    """Build the clip (uncached). Sides must be multiples of 16 (whole macroblocks)."""
    if width % _MB or height % _MB or width <= 0 or height <= 0:
        raise ValueError("width and height must be positive multiples of 16")
    if frames < 1 or fps < 1:
        raise ValueError("frames and fps must be at least 1")
    sps, pps = _sps(width, height), _pps()
    samples = []
    for index in range(frames):
        nal = _idr_slice(width, height, index, frames)
        samples.append(struct.pack(">I", len(nal)) + nal)
    sizes = [len(s) for s in samples]
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    # stco's size does not depend on its value, so measure moov once with a dummy offset.
    moov_len = len(_moov(width, height, fps, sizes, 0, sps, pps))
    offset = len(ftyp) + moov_len + 8
    moov = _moov(width, height, fps, sizes, offset, sps, pps)
    return ftyp + moov + _box(b"mdat", *samples)


@functools.lru_cache(maxsize=8)
def make_mp4(width: int = 64, height: int = 64, frames: int = 12, fps: int = 12) -> bytes:
    """The clip served at every ``videoURL``; made once per process and size, then cached."""
    return build_mp4(width, height, frames, fps)
