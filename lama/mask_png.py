"""Brush masks stored as gray PNGs, decoded with a few whole-array operations.

A mask is mostly one value with strokes of another. OpenCV (libpng) spends 13 ms on the load
benchmark's 27 kB mask at 2560×1920, longer than decoding the JPEG photo beside it, almost all
of it undoing row filters byte by byte. Inflated, a row filtered 'Sub' (each byte minus its
left neighbour: OpenCV writes every row so) is zero except where a stroke begins or ends, so
its running sum is rebuilt from those bytes alone: the sum at each of them, each value then
repeated up to the next. 'None' rows are copies and 'Up' rows adds of whole rows. numpy's own
running sum along a row goes an element at a time: 9 ms at that size.

Read here: 8-bit and 1-bit gray, no transparency (tRNS) or palette, not interlaced, every row
filtered None, Sub or Up, at most MAX_CHANGES of the Sub rows' bytes nonzero: OpenCV's masks
and the 1-bit ones the editor sends. :func:`decode` returns None for anything else (Paeth or
Average rows, as Pillow's and browsers' adaptive filters write them; photos; a damaged file)
and the caller decodes with OpenCV, which also says what is wrong with a broken file.
The inflating and the scans for nonzero bytes run without the GIL; the rest is numpy on
arrays the size of the changes, and whole-row adds. Each of those dozen calls gives the GIL up
and takes it back: nothing alone, a wait at a time when a loaded server's threads want it
(docs/BENCHMARKS.md, thirteenth H200 run: the decode stage is shorter for one client, longer
at 16, and the throughput is unchanged).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
from zlib_ng import zlib_ng

from lama import png

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_NONE, _FILTER_SUB, _FILTER_UP = 0, 1, 2
# An 8-bit file whose compressed pixels are larger than this share of the inflated ones is no
# brush mask (the load benchmark's: 1/60 at 640×480 to 1/180 at 2560×1920): it goes to
# OpenCV without inflating.
MAX_COMPRESSED_SHARE = 1 / 16
# Nonzero bytes of the Sub rows, as a share of them, beyond which rebuilding the running sums
# comes near OpenCV's decode: a change costs some ten times what a byte costs libpng. A hard
# stroke edge makes one change, a soft one a few (`codec_bench.py --masks` has both).
MAX_CHANGES = 1 / 32


def decode(data: bytes) -> np.ndarray | None:
    """The pixels (H×W uint8; 1-bit pixels as 0 and 255, as OpenCV gives them) of a gray PNG
    made of IHDR, IDAT and IEND chunks only (what lama.formats keeps of an upload), or None:
    not one this module reads, decode it some other way. The caller has checked the size
    against its limits (the arrays are allocated here)."""
    parsed = _parse(memoryview(data))
    if parsed is None:
        return None
    width, height, depth, compressed = parsed
    row_bytes = (width * depth + 7) // 8
    stride = row_bytes + 1  # the filter byte first
    expected = stride * height
    if depth == 8 and len(compressed) > expected * MAX_COMPRESSED_SHARE:
        return None
    inflater = zlib_ng.decompressobj()
    try:
        raw = inflater.decompress(compressed, expected + 1)  # bounded: a bomb stops here
    except zlib_ng.error:
        return None
    if len(raw) != expected or not inflater.eof or inflater.unused_data:
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride)
    kinds = rows[:, 0]
    if np.any(kinds > _FILTER_UP):
        return None
    packed = _unfilter(rows, kinds)
    if packed is None:
        return None
    if depth == 8:
        return packed
    bits = np.unpackbits(packed, axis=1, count=width)
    return np.multiply(bits, 255, out=bits)


def _parse(view: memoryview) -> tuple[int, int, int, bytes] | None:
    """(width, height, bit depth, the IDATs' bytes joined) of a file this module reads, with
    every chunk's CRC checked; None for anything else."""
    if bytes(view[:8]) != _SIGNATURE:
        return None
    pos, size = 8, len(view)
    header = None
    idats: list[memoryview] = []
    while True:
        if pos + 12 > size:
            return None
        length, kind = struct.unpack_from(">I4s", view, pos)
        start, end = pos + 8, pos + 8 + length
        if end + 4 > size:
            return None
        if zlib_ng.crc32(view[start:end], zlib_ng.crc32(kind)) != int.from_bytes(view[end:end + 4], "big"):
            return None
        pos = end + 4
        if kind == b"IHDR" and header is None and length == 13:
            header = struct.unpack_from(">IIBBBBB", view, start)
        elif kind == b"IDAT" and header is not None:
            idats.append(view[start:end])
        elif kind == b"IEND" and idats:
            break
        else:
            return None  # a palette, transparency, chunks out of order: OpenCV's
    width, height, depth, colour, compression, filtering, interlace = header
    if colour != 0 or depth not in (1, 8) or (compression, filtering, interlace) != (0, 0, 0):
        return None
    if width == 0 or height == 0:
        return None
    return width, height, depth, b"".join(idats)


def _unfilter(rows: np.ndarray, kinds: np.ndarray) -> np.ndarray | None:
    """The unfiltered bytes of `rows` (filter byte first, None, Sub or Up each), or None when
    too many of them change for the running sums to pay."""
    pixels = rows[:, 1:]
    is_sub = kinds == _FILTER_SUB
    if is_sub.all():  # OpenCV's masks
        return _sub_rows(pixels)
    out = np.empty(pixels.shape, np.uint8)
    if is_sub.any():
        unfiltered = _sub_rows(pixels[is_sub])
        if unfiltered is None:
            return None
        out[is_sub] = unfiltered
    out[~is_sub] = pixels[~is_sub]  # None rows as they are, Up rows their differences, summed below
    # Each run of Up rows adds up from the row above it (zeros above the first row): whole-row
    # adds, a logarithmic number of them, not one a row that hands the GIL over each time.
    is_up = (kinds == _FILTER_UP).astype(np.int8)
    edges = np.flatnonzero(np.diff(is_up, prepend=0, append=0)).tolist()
    for start, end in zip(edges[::2], edges[1::2]):
        png.prefix_sum_rows(out[max(start - 1, 0):end])
    return out


def _sub_rows(pixels: np.ndarray) -> np.ndarray | None:
    """`pixels`, rows filtered Sub, unfiltered: each row's running sum (modulo 256) rebuilt
    from its nonzero bytes; None when too many are nonzero. One byte a pixel for both depths:
    Sub's left neighbour is the byte before (for 1-bit pixels too)."""
    height, row_bytes = pixels.shape
    # OpenCV's scans read 2560×1920 bytes in 0.2 and 0.4 ms, numpy's nonzero in 6.
    changes = cv2.countNonZero(pixels)
    if changes > pixels.size * MAX_CHANGES:
        return None
    if not changes:
        return np.zeros((height, row_bytes), np.uint8)
    column, row = cv2.findNonZero(pixels).reshape(-1, 2).T.astype(np.intp)  # in row order
    values = pixels[row, column]
    # Running sums within each row: the sum over all changes so far, less that before the row's first.
    sums = np.cumsum(values, dtype=np.int64)
    firsts = np.flatnonzero(np.diff(row, prepend=-1))
    before_row = np.repeat(sums[firsts] - values[firsts], np.diff(firsts, append=row.size))
    levels = (sums - before_row).astype(np.uint8)  # modulo 256, as PNG's arithmetic
    # A step function over the rows laid end to end: each row starts at 0 and changes level
    # at its changes. A change at a row's first byte follows the row's start in the stable sort.
    positions = np.concatenate([np.arange(height) * row_bytes, row * row_bytes + column])
    order = np.argsort(positions, kind="stable")
    positions = positions[order]
    steps = np.concatenate([np.zeros(height, np.uint8), levels])[order]
    lengths = np.diff(positions, append=height * row_bytes)
    return np.repeat(steps, lengths).reshape(height, row_bytes)
