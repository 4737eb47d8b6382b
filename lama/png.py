"""PNG written in parallel, and read back in parallel when this module wrote it.

A PNG's pixels are one zlib stream, and zlib compresses and decompresses on one core:
for a large photo OpenCV (libpng) spends several times the model's own time on it. Deflate lets a stream be cut into segments that
share nothing: each is compressed on its own and ends with a sync flush (an empty stored
block, so the next segment starts on a byte boundary with no back references across),
the last one with the final block; concatenated behind one zlib header and followed by
the Adler-32 of all the data they form one ordinary stream that every decoder reads.
The deflate releases the GIL, so the segments are compressed on lama.parallel's pool, a thread
per core (an order of magnitude faster than cv2.imencode on the GPU box's 16; docs/PROFILING.md).
The deflate is Intel's ISA-L (python-isal, at its level 1): compressing the result was the
largest share of the CPU time a repair costs, and with ISA-L lama.png encodes in 0.4–0.6× the
time it took on zlib-ng's level 1 with zlib's run-length strategy at 1280×960 and 2560×1920, to
files 2–4 % smaller on real photos and 3–4 % larger on the load benchmark's grainy ones
(``python tools/codec_bench.py`` has lama.png's rows on both, times and sizes). The rest
(inflating, the checksums) is zlib-ng's (python-zlib-ng: zlib's API and streams, the GIL
released as well), which inflates in 0.8× the time of Python's zlib and computes the checksums
in a tenth.

What is written (measured on photo-like and real photos, see ``python -m lama bench --codecs-only``):
  * filter 'Up' (each byte minus the one above it) on every row but a segment's first,
    which gets 'Sub' (minus the pixel to its left) so that a segment can be decoded
    without its predecessor. Up compresses as well as OpenCV's 'Sub' on noisy photos and
    6-19 % better on two real ones; unlike Sub, Paeth or Average it is undone by adds of
    whole rows (Sub's running sum goes along the row, which numpy does an element at a
    time: fine for one row a segment, 50× too slow for all). An unfiltered first row
    instead would cost 3 % in size with 34-row segments, Sub costs nothing;
  * ISA-L's level 1 (a match finder with a small hash table; in an ad-hoc trial on the photos
    of tools/codec_bench.py, its levels 2 and 3 made files no smaller, slower, and level 0
    larger ones);
  * one IDAT chunk per segment, and an ancillary private chunk ``lmSG`` (rows per segment)
    before them. Any decoder ignores it; :func:`decode` uses it to inflate and unfilter
    the segments in parallel. The idea is Apple's iDOT chunk. ``lmSG`` is marked
    unsafe-to-copy (uppercase last letter), so editors that rewrite the pixels drop it.

An image is cut into at most 16 segments of at least 128 KiB, whatever the machine's core
count; an image under 256 KiB is one segment, done in the calling thread.

:func:`decode` reads only files laid out exactly as :func:`encode` writes them (8-bit
gray, RGB or RGBA, no chunks but its own metadata ones) and checks every CRC, the zlib header, each segment's
length and the Adler-32; for anything else it returns None and the caller decodes with
OpenCV, which then also produces the error message for a broken file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from isal import isal_zlib
from zlib_ng import zlib_ng

from lama import parallel

SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEGMENT_CHUNK = b"lmSG"
_SEGMENT_VERSION = 1

# How an image is cut: into at most MAX_SEGMENTS segments of at least MIN_SEGMENT_BYTES
# raw (filtered) bytes, whole rows each. Each segment costs the calls that hand the GIL
# between threads, so a large image wants few big ones, a small one enough to keep the
# cores busy (the sizes tried: docs/PROFILING.md).
# Fixed numbers, not the machine's core count, so that the file does not depend on the
# machine's size. Changing them changes the files written, not what can be read.
MAX_SEGMENTS = 16
MIN_SEGMENT_BYTES = 128 * 1024

_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (gray, RGB, RGBA)
_CHANNELS = {colour: channels for channels, colour in _COLOUR_TYPES.items()}
_FILTER_NONE, _FILTER_SUB, _FILTER_UP = 0, 1, 2
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, "fastest" level, no dictionary
DEFLATE_LEVEL = 1  # ISA-L's (0 to 3)
_SYNC_MARKER = b"\x00\x00\xff\xff"  # the empty stored block a sync flush ends with
_ADLER_BASE = 65521
# Metadata chunks encode() writes between IHDR and the pixel data (decode() reads past them).
_METADATA_CHUNKS = frozenset({b"iCCP", b"eXIf"})
_ICC_NAME = b"ICC profile"  # an iCCP chunk's profile name: any, as long as it is there
_EXIF_HEADER = b"Exif\0\0"  # JPEG's prefix of an EXIF block, which PNG's eXIf chunk has not


# --------------------------------------------------------------------------- encoding


def rows_per_segment(width: int, height: int, channels: int) -> int:
    row_bytes = width * channels + 1
    segments = max(1, min(MAX_SEGMENTS, height * row_bytes // MIN_SEGMENT_BYTES, height))
    return -(-height // segments)


class _Compressed(NamedTuple):
    """One segment compressed: its IDAT's payload in pieces, the payload's CRC so far (over
    "IDAT" and the pieces), and the Adler-32 and length of its raw (filtered) rows."""

    pieces: list[bytes]
    crc: int
    adler: int
    length: int


class _Cut:
    """An image as encode() cuts it: rows of width × channels bytes, `step` rows a segment."""

    def __init__(self, image: np.ndarray):
        image = np.ascontiguousarray(image)
        self.shape = image.shape
        self.height, self.width = image.shape[:2]
        self.channels = 1 if image.ndim == 2 else image.shape[2]
        self.rows = image.reshape(self.height, self.width * self.channels)
        self.step = rows_per_segment(self.width, self.height, self.channels)
        self.count = -(-self.height // self.step)

    def rows_of(self, index: int) -> tuple[int, int]:
        """Segment `index`'s rows [start, stop)."""
        start = index * self.step
        return start, min(start + self.step, self.height)

    def holds_any(self, index: int, rows: tuple[int, int]) -> bool:
        """Whether segment `index` holds any of the rows [start, stop)."""
        first, end = self.rows_of(index)
        return max(first, rows[0]) < min(end, rows[1])

    def compress(self, index: int) -> _Compressed:
        channels, width = self.channels, self.width
        segment = self.rows[slice(*self.rows_of(index))]
        filtered = np.empty((len(segment), width * channels + 1), np.uint8)
        filtered[0, 0] = _FILTER_SUB
        filtered[0, 1:1 + channels] = segment[0, :channels]
        np.subtract(segment[0, channels:], segment[0, :-channels], out=filtered[0, 1 + channels:])
        filtered[1:, 0] = _FILTER_UP
        np.subtract(segment[1:], segment[:-1], out=filtered[1:, 1:])  # uint8: modulo 256
        raw = filtered.data
        pieces = [_ZLIB_HEADER] if index == 0 else []
        pieces += deflate_segment(raw, last=index == self.count - 1)
        crc = zlib_ng.crc32(b"IDAT")
        for piece in pieces:
            crc = zlib_ng.crc32(piece, crc)
        return _Compressed(pieces, crc, zlib_ng.adler32(raw), filtered.size)

    def compress_all(self, indices: list[int]) -> dict[int, _Compressed]:
        """The segments `indices` compressed on lama.parallel's pool (zlib releases the GIL)."""
        return dict(zip(indices, parallel.run_all(self.compress, indices), strict=True)) if indices else {}


def deflate_segment(raw: memoryview, last: bool) -> list[bytes]:
    """One segment's raw deflate (no zlib header or checksum), ended by a sync flush (an empty
    stored block: the next segment starts on a byte boundary), the last segment by the final block."""
    compressor = isal_zlib.compressobj(DEFLATE_LEVEL, isal_zlib.DEFLATED, -15)
    return [compressor.compress(raw), compressor.flush(isal_zlib.Z_FINISH if last else isal_zlib.Z_SYNC_FLUSH)]


class Ahead(NamedTuple):
    """Segments of an image compressed before the rest of it is final (:func:`compress_ahead`)."""

    shape: tuple[int, ...]
    changing: tuple[int, int]  # the rows [start, stop) still to change: no segment here holds one
    segments: dict[int, _Compressed]


def compress_ahead(image: np.ndarray, changing: tuple[int, int]) -> Ahead:
    """The segments of `image` that hold none of the rows [start, stop) of `changing`, compressed
    now, for a caller that will change the image in those rows only and then encode it: a
    repair's result differs from its photo in the mask's box alone, so the segments above and
    below it can be compressed while the model runs. :func:`encode` of the final image with this
    `ahead` then compresses only the other segments, and writes the same file as without it."""
    cut = _Cut(image)
    untouched = [index for index in range(cut.count) if not cut.holds_any(index, changing)]
    return Ahead(cut.shape, changing, cut.compress_all(untouched))


def encode(image: np.ndarray, exif: bytes | None = None, icc_profile: bytes | None = None,
           ahead: Ahead | None = None) -> bytes:
    """PNG bytes of an H×W (gray), H×W×3 (RGB) or H×W×4 (RGBA) uint8 array.

    The caller checks the array (imageio.encode_image does); sizes up to 2**31 − 1 a side.
    `exif` ("Exif\\0\\0" and a TIFF-structured block, as Pillow writes it) and `icc_profile`
    go into eXIf and iCCP chunks before the pixel data, where readers look for them.
    `ahead`: :func:`compress_ahead`'s segments of this image's earlier state, whose rows the
    caller has left as they were; only the others are compressed here.
    """
    cut = _Cut(image)
    done = {}
    if ahead is not None:
        if ahead.shape != cut.shape:
            raise ValueError(f"segments compressed ahead for an image of shape {ahead.shape}, not {cut.shape}")
        done = ahead.segments
    done = {**done, **cut.compress_all([index for index in range(cut.count) if index not in done])}
    segments = [done[index] for index in range(cut.count)]

    adler = 1
    for segment in segments:
        adler = _adler32_combine(adler, segment.adler, segment.length)
    trailer = struct.pack(">I", adler)  # ends the zlib stream, in the last IDAT
    last = segments[-1]
    segments[-1] = last._replace(pieces=[*last.pieces, trailer], crc=zlib_ng.crc32(trailer, last.crc))

    colour = _COLOUR_TYPES[cut.channels]
    parts = [SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", cut.width, cut.height, 8, colour, 0, 0, 0))]
    if icc_profile:
        parts.append(_chunk(b"iCCP", _ICC_NAME + b"\0\0" + zlib_ng.compress(icc_profile)))
    if exif:
        parts.append(_chunk(b"eXIf", exif.removeprefix(_EXIF_HEADER)))
    parts.append(_chunk(SEGMENT_CHUNK, struct.pack(">BI", _SEGMENT_VERSION, cut.step)))
    for segment in segments:  # one IDAT each, joined once: no copies on the way
        parts += [struct.pack(">I", sum(map(len, segment.pieces))), b"IDAT", *segment.pieces,
                  struct.pack(">I", segment.crc)]
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib_ng.crc32(payload, zlib_ng.crc32(kind)))


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """Adler-32 of A+B from those of A and B (zlib's adler32_combine, which Python lacks).

    Adler-32 is (s1, s2) with s1 = 1 + Σ bytes and s2 = Σ of the running s1 values, mod
    65521. Appending B adds B's byte sum to s1, and to s2 B's own s2 plus len(B) times A's
    s1, less the len(B) ones that B's s1 counted from its own start.
    """
    length = second_length % _ADLER_BASE
    s1_a, s2_a = first & 0xFFFF, first >> 16
    s1_b, s2_b = second & 0xFFFF, second >> 16
    s1 = (s1_a + s1_b - 1) % _ADLER_BASE
    s2 = (s2_a + s2_b + length * s1_a - length) % _ADLER_BASE
    return (s2 << 16) | s1


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class _Layout:
    width: int
    height: int
    channels: int
    step: int
    idats: list[tuple[int, int]]  # (start, end) of each IDAT's payload in the file


def decode(data: bytes) -> np.ndarray | None:
    """The pixels of a PNG that :func:`encode` wrote (H×W, H×W×3 RGB or H×W×4 RGBA), or None.

    None means "not one of ours, or damaged": decode it some other way. The caller has
    checked the size against its limits already (the array is allocated here).
    """
    view = memoryview(data)
    layout = _layout(view)
    if layout is None:
        return None
    width, height, channels = layout.width, layout.height, layout.channels
    stride = width * channels
    image = np.empty((height, width, channels) if channels > 1 else (height, width), np.uint8)
    rows = image.reshape(height, stride)
    last = len(layout.idats) - 1

    def inflate(index: int) -> tuple[int, int] | None:
        start, end = layout.idats[index]
        body = view[start:end]
        if zlib_ng.crc32(body, zlib_ng.crc32(b"IDAT")) != int.from_bytes(view[end:end + 4], "big"):
            return None
        if index == 0:
            if not _is_zlib_header(body):
                return None
            body = body[2:]
        if index == last:
            if len(body) < 4:
                return None
            body = body[:-4]
        elif bytes(body[-4:]) != _SYNC_MARKER:
            return None  # not cut at a flush point: would need the previous segment
        first = index * layout.step
        count = min(layout.step, height - first)
        expected = count * (stride + 1)
        inflater = zlib_ng.decompressobj(-15)
        try:
            raw = inflater.decompress(body, expected + 1)
        except zlib_ng.error:
            return None
        if len(raw) != expected or inflater.unconsumed_tail or inflater.eof != (index == last):
            return None
        if inflater.unused_data:
            return None
        filtered = np.frombuffer(raw, np.uint8).reshape(count, stride + 1)
        if not _unfilter(filtered, rows[first:first + count], channels):
            return None
        return zlib_ng.adler32(raw), expected

    results = parallel.run_all(inflate, list(range(len(layout.idats))))
    if any(result is None for result in results):
        return None
    adler = 1
    for segment_adler, length in results:
        adler = _adler32_combine(adler, segment_adler, length)
    end = layout.idats[-1][1]
    if adler != int.from_bytes(view[end - 4:end], "big"):
        return None
    return image


def _is_zlib_header(body: memoryview) -> bool:
    """Deflate with a window zlib accepts, a valid check value and no preset dictionary."""
    if len(body) < 2:
        return False
    cmf, flg = body[0], body[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and not flg & 0x20 and (cmf * 256 + flg) % 31 == 0


def _unfilter(filtered: np.ndarray, out: np.ndarray, channels: int) -> bool:
    """Undo None, Sub and Up row filters into ``out``; False for Average and Paeth, and
    for Up on a segment's first row (it would need the row before the segment)."""
    kinds = filtered[:, 0]
    if kinds[0] == _FILTER_UP or np.any(kinds > _FILTER_UP):
        return False
    pixels = filtered[:, 1:]
    if np.all(kinds[1:] == _FILTER_UP):  # what encode() writes
        _undo_none_or_sub(kinds[0], pixels[0], out[0], channels)
        out[1:] = pixels[1:]
        prefix_sum_rows(out)
        return True
    for row in range(len(out)):  # mixed filters: a row at a time
        if kinds[row] == _FILTER_UP:
            np.add(out[row - 1], pixels[row], out=out[row])
        else:
            _undo_none_or_sub(kinds[row], pixels[row], out[row], channels)
    return True


def prefix_sum_rows(rows: np.ndarray) -> None:
    """rows[i] = rows[0] + ... + rows[i] (mod 256) in place, which undoes Up.

    In ⌈log2(rows)⌉ whole-array adds (Hillis-Steele), not one add a row: those are
    fast alone but hold the GIL between every two, and 16 threads doing that spent more
    time handing the GIL over than adding. numpy copies an overlapping operand first, so
    each step reads old rows. numpy's cumsum down axis 0 would be one call but runs an
    element at a time (far slower; docs/PROFILING.md).
    """
    shift = 1
    while shift < len(rows):
        rows[shift:] += rows[:-shift]
        shift *= 2


def _undo_none_or_sub(kind: int, pixels: np.ndarray, out: np.ndarray, channels: int) -> None:
    if kind == _FILTER_NONE:
        out[:] = pixels
    else:  # Sub: a running sum of each channel along the row, modulo 256
        np.cumsum(pixels.reshape(-1, channels), axis=0, dtype=np.uint8, out=out.reshape(-1, channels))


def _layout(view: memoryview) -> _Layout | None:
    """Where the pieces are, if the file is laid out as encode() writes it (CRCs of IDAT
    are checked later, in parallel)."""
    if bytes(view[:8]) != SIGNATURE:
        return None
    pos, size = 8, len(view)
    header = step = None
    idats: list[tuple[int, int]] = []
    while True:
        if pos + 12 > size:
            return None
        length = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        start, end = pos + 8, pos + 8 + length
        if length > 2**31 - 1 or end + 4 > size:
            return None
        pos = end + 4
        if kind == b"IDAT":
            if header is None or step is None or (idats and idats[-1][1] + 4 != start - 8):
                return None  # IDATs must follow one another
            idats.append((start, end))
            continue
        if zlib_ng.crc32(view[start:end], zlib_ng.crc32(kind)) != int.from_bytes(view[end:end + 4], "big"):
            return None
        if kind == b"IHDR" and header is None and length == 13 and start == 16:
            header = struct.unpack(">IIBBBBB", view[start:end])
        elif kind in _METADATA_CHUNKS and header is not None and step is None:
            continue
        elif kind == SEGMENT_CHUNK and header is not None and step is None and not idats and length == 5:
            version, step = struct.unpack(">BI", view[start:end])
            if version != _SEGMENT_VERSION or step == 0:
                return None
        elif kind == b"IEND" and idats and length == 0 and pos == size:
            break
        else:
            return None  # any other chunk, order or trailing data: not ours
    width, height, depth, colour, compression, filtering, interlace = header
    if depth != 8 or colour not in _CHANNELS or (compression, filtering, interlace) != (0, 0, 0):
        return None
    if width == 0 or height == 0 or width > 2**31 - 1 or height > 2**31 - 1:
        return None
    if len(idats) != -(-height // step):
        return None
    return _Layout(width, height, _CHANNELS[colour], step, idats)
