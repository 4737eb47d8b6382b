"""lama.mask_png: brush masks as gray PNGs, decoded with whole-array operations.

Correctness only: what it decodes must be OpenCV's (libpng's) pixels exactly, whatever the
rows' filters, depth and width, and it must give None (OpenCV's turn) for every file it does
not read or that is damaged. Speed is measured, not tested: `python tools/codec_bench.py --masks`.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lama import imageio, mask_png, png
from loadreport import images

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=200)
NONE, SUB, UP, AVERAGE, PAETH = range(5)


def filtered(data: np.ndarray, kinds: list[int]) -> bytes:
    """`data` (H × row bytes) with each row filtered as `kinds` says (None, Sub or Up)."""
    rows, above = [], np.zeros(data.shape[1], np.uint8)
    for row, kind in zip(data, kinds):
        if kind == SUB:
            row_filtered = row - np.concatenate([[0], row[:-1]]).astype(np.uint8)
        elif kind == UP:
            row_filtered = row - above
        else:
            row_filtered = row
        rows.append(bytes([kind]) + row_filtered.astype(np.uint8).tobytes())
        above = row
    return b"".join(rows)


def gray_png(mask: np.ndarray, kinds: list[int] | int, depth: int = 8, extra: bytes = b"",
             interlace: int = 0) -> bytes:
    """A gray PNG of `mask` (1-bit: nonzero is white) with the rows filtered as `kinds` says."""
    height, width = mask.shape
    kinds = [kinds] * height if isinstance(kinds, int) else kinds
    data = np.packbits(mask > 0, axis=1) if depth == 1 else mask
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + png._chunk(b"IHDR", header) + extra
            + png._chunk(b"IDAT", zlib.compress(filtered(data, kinds))) + png._chunk(b"IEND", b""))


@pytest.fixture
def any_density(monkeypatch):
    """Files decoded however many bytes change: the limits are for speed, not correctness."""
    monkeypatch.setattr(mask_png, "MAX_CHANGES", 1.0)
    monkeypatch.setattr(mask_png, "MAX_COMPRESSED_SHARE", float("inf"))  # tiny files grow compressed


def opencv(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def strokes(width: int, height: int, seed: int = 3, soft: bool = False) -> np.ndarray:
    mask = images.stroke_mask(width, height, 0.08, seed)
    return cv2.GaussianBlur(mask, (3, 3), 0) if soft else mask


# ------------------------------------------------------------------ what it reads


@pytest.mark.parametrize("size", [(640, 480), (1281, 961), (2560, 1920)])
def test_opencvs_masks_decode_to_opencvs_pixels(size):
    data = images.png(strokes(*size))  # cv2.imencode: every row Sub
    ours = mask_png.decode(data)
    assert ours is not None, "an OpenCV brush mask went to OpenCV"
    np.testing.assert_array_equal(ours, opencv(data))


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("kinds", ["none", "sub", "up", "mixed"])
def test_every_mix_of_none_sub_and_up_rows(any_density, kinds, soft):
    mask = strokes(1000, 700, soft=soft)
    mask[5, 0] = 200  # a change at a row's first byte
    mask[6, :] = 255  # a row that starts and stays at its level
    kinds = {"none": NONE, "sub": SUB, "up": UP,
             "mixed": np.random.default_rng(0).integers(0, 3, mask.shape[0]).tolist()}[kinds]
    data = gray_png(mask, kinds)
    ours = mask_png.decode(data)
    assert ours is not None
    np.testing.assert_array_equal(ours, opencv(data))
    np.testing.assert_array_equal(ours, mask)


@pytest.mark.parametrize("width", [1, 7, 8, 9, 1003])
@pytest.mark.parametrize("kinds", [NONE, SUB, UP])
def test_one_bit_masks_of_any_width_are_0_and_255(any_density, width, kinds):
    mask = np.zeros((40, width), np.uint8)
    mask[10:30, width // 3:] = 1
    data = gray_png(mask, kinds, depth=1)
    ours = mask_png.decode(data)
    assert ours is not None
    np.testing.assert_array_equal(ours, mask * 255)
    np.testing.assert_array_equal(ours, opencv(data))


def test_the_editors_masks_are_read():
    """1-bit, every row None, one IDAT: what webui/static/editor.js's maskPng sends."""
    mask = strokes(2560, 1920) > 127
    data = images.editor_mask_png(mask)
    ours = mask_png.decode(data)
    assert ours is not None
    np.testing.assert_array_equal(ours, mask.astype(np.uint8) * 255)


def test_sums_wrap_modulo_256(any_density):
    """Running sums past 255 (a soft edge of many levels in one row) wrap, as PNG's arithmetic."""
    mask = np.zeros((3, 600), np.uint8)
    mask[:, 100:356] = np.arange(256, dtype=np.uint8)  # 255 changes of +1, then one of -255
    mask[1, 100:356] = np.arange(256)[::-1]
    np.testing.assert_array_equal(mask_png.decode(gray_png(mask, SUB)), mask)


def test_an_empty_mask_is_zeros():
    data = gray_png(np.zeros((50, 70), np.uint8), SUB)
    np.testing.assert_array_equal(mask_png.decode(data), np.zeros((50, 70), np.uint8))


def test_idat_split_in_several_chunks_is_read():
    mask = strokes(300, 200)
    data = gray_png(mask, SUB)
    head, idat_and_end = data[:33], data[33:]
    payload = idat_and_end[8:8 + struct.unpack(">I", idat_and_end[:4])[0]]
    pieces = b"".join(png._chunk(b"IDAT", payload[at:at + 100]) for at in range(0, len(payload), 100))
    np.testing.assert_array_equal(mask_png.decode(head + pieces + png._chunk(b"IEND", b"")), mask)


@st.composite
def sparse_masks(draw):
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 90))
    mask = np.zeros((height, width), np.uint8)
    for _ in range(draw(st.integers(0, 6))):
        top, left = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        mask[top:top + draw(st.integers(1, height)), left:left + draw(st.integers(1, width))] = draw(
            st.integers(0, 255))
    depth = draw(st.sampled_from([1, 8]))
    kinds = draw(st.lists(st.sampled_from([NONE, SUB, UP]), min_size=height, max_size=height))
    return mask, depth, kinds


@FUZZ
@given(sparse_masks())
def test_any_sparse_mask_decodes_to_opencvs_pixels(case):
    mask, depth, kinds = case
    data = gray_png(mask, kinds, depth)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mask_png, "MAX_CHANGES", 1.0)
        patch.setattr(mask_png, "MAX_COMPRESSED_SHARE", float("inf"))
        ours = mask_png.decode(data)
    np.testing.assert_array_equal(ours, opencv(data))


# ------------------------------------------------------------------ what it leaves to OpenCV


def pillow_png(mask: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(mask).convert(mode).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("data", [
    pytest.param(lambda: pillow_png(strokes(640, 480), "L"), id="Pillow's adaptive filters (Paeth rows)"),
    pytest.param(lambda: gray_png(strokes(64, 48), [SUB] * 47 + [AVERAGE]), id="an Average row"),
    pytest.param(lambda: gray_png(strokes(64, 48), [PAETH] + [SUB] * 47), id="a Paeth row"),
    pytest.param(lambda: images.png(np.dstack([strokes(64, 48)] * 3)), id="RGB"),
    pytest.param(lambda: pillow_png(strokes(64, 48), "LA"), id="gray and alpha"),
    pytest.param(lambda: pillow_png(strokes(64, 48), "P"), id="a palette"),
    pytest.param(lambda: images.png(strokes(64, 48).astype(np.uint16) * 257), id="16-bit"),
    pytest.param(lambda: gray_png(strokes(64, 48), SUB, extra=png._chunk(b"tRNS", b"\x00\x00")), id="transparency"),
    pytest.param(lambda: gray_png(strokes(64, 48), SUB, interlace=1), id="interlaced"),
    pytest.param(lambda: images.png(np.random.default_rng(0).integers(0, 256, (480, 640), np.uint8)), id="a photo"),
    pytest.param(lambda: images.png(cv2.GaussianBlur(strokes(640, 480, seed=1), (31, 31), 0)),
                 id="soft edges everywhere"),
])
def test_other_files_are_left_to_opencv(data):
    assert mask_png.decode(data()) is None


def test_every_truncation_and_flipped_byte_is_refused(any_density):
    data = gray_png(strokes(40, 30, seed=5), [SUB, UP, NONE] * 10)
    assert mask_png.decode(data) is not None
    for end in range(len(data)):
        assert mask_png.decode(data[:end]) is None
    for at in range(8, len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x5A
        assert mask_png.decode(bytes(damaged)) is None  # every byte is under a CRC or checked


def test_a_stream_that_inflates_to_more_than_its_rows_is_refused():
    mask = np.zeros((20, 30), np.uint8)
    one_row_more = zlib.compress(filtered(np.zeros((21, 30), np.uint8), [SUB] * 21))
    data = gray_png(mask, SUB)
    header_end = 33
    forged = data[:header_end] + png._chunk(b"IDAT", one_row_more) + png._chunk(b"IEND", b"")
    assert mask_png.decode(forged) is None
    trailing_data = zlib.compress(filtered(mask, [SUB] * 20)) + b"\0"
    trailing = data[:header_end] + png._chunk(b"IDAT", trailing_data) + png._chunk(b"IEND", b"")
    assert mask_png.decode(trailing) is None


# ------------------------------------------------------------------ through lama.imageio


def test_imageio_reads_masks_with_it_and_the_same_pixels_as_before(monkeypatch):
    upright = strokes(640, 480, soft=False)
    data = images.png(upright)
    calls = []
    decode = mask_png.decode
    monkeypatch.setattr(mask_png, "decode", lambda payload: calls.append(1) or decode(payload))
    np.testing.assert_array_equal(imageio.decode_mask(data), upright)
    assert calls, "imageio did not try lama.mask_png for a PNG mask"
    monkeypatch.setattr(mask_png, "decode", lambda payload: None)
    np.testing.assert_array_equal(imageio.decode_mask(data), upright)


def test_exif_orientation_is_applied_to_masks_it_reads(any_density):
    mask = strokes(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90° clockwise to be upright
    out = io.BytesIO()
    Image.fromarray(mask).save(out, "PNG", exif=exif, optimize=False)
    # Pillow's adaptive filters would send the file to OpenCV: rewrite its rows filtered Sub.
    pillow = out.getvalue()
    exif_chunk = pillow[pillow.index(b"eXIf") - 4:]
    exif_chunk = exif_chunk[:12 + struct.unpack(">I", exif_chunk[:4])[0]]
    data = gray_png(mask, SUB, extra=exif_chunk)
    assert mask_png.decode(imageio.formats.walk("PNG", data).pixel_data) is not None
    np.testing.assert_array_equal(imageio.decode_mask(data), np.rot90(mask, -1))


def test_the_mask_decoders_comparison_prints_a_table_per_writer(capsys):
    """tools/codec_bench.py --masks: a table for each way of writing a mask, each with the
    service's decoder, OpenCV and Pillow at every size asked for."""
    import runpy

    from support.paths import ROOT

    bench = runpy.run_path(str(ROOT / "tools" / "codec_bench.py"))
    bench["main"](["--masks", "--sizes", "64x48,96x64", "--runs", "1"])
    out = capsys.readouterr().out
    for writer in ("OpenCV (8-bit, Sub)", "Pillow (8-bit, adaptive)", "the editor (1-bit)",
                   "OpenCV, soft edges (8-bit, Sub)"):
        assert f"**Decode a mask written by {writer} (files of " in out
    assert out.count("| lama.imageio.decode_mask (the service) |") == 4 and out.count("| 64×48 | 96×64 |") == 4
    assert "**Decode JPEG" not in out
