"""Structure walkers: PNG, JPEG and TIFF checked the way their pixel decoders will read them.

Pillow reads an upload's header for the size checks, but the pixels are decoded by other
code (libjpeg-turbo in simplejpeg, OpenCV's libpng, libjpeg-turbo and libtiff), which reads the same bytes differently
where a file is hostile: a chunk length past the end of the file that libpng allocates
before noticing, a size tag that libtiff takes from the first copy and Pillow from the
last, a JPEG with thousands of scans that each cost a pass over every block. Each walker
here reads the file's structure once, cheaply (time linear in the file's size, no pixel
buffer), refuses what the decoders could read differently or what would cost more than
the file's size suggests, and says what the decoder must see: the (width, height) it will
use, which imageio compares with Pillow's, the bytes to hand it and, for the JPEGs photos
come as, the channels it will decode them to.

Refusals raise :class:`StructureError` with a one-line message for the user.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from PIL import TiffTags

from lama.errors import ImageError

CORRUPT = "image is truncated or corrupt"


class StructureError(ImageError):
    """The file's structure is broken or hostile; the message is meant for the user."""


@dataclass(frozen=True)
class Structure:
    """What the pixel decoder will read: its (width, height) and the bytes to give it.

    ``channels`` is set for the JPEGs that photos come as (8-bit, gray or colour, Huffman
    coded): the channels simplejpeg decodes them to, which with the size is the whole array it
    must fill. None: OpenCV decodes the file (PNG, TIFF, CMYK or 12-bit JPEG, ...).
    """

    size: tuple[int, int]
    pixel_data: bytes
    channels: int | None = None


def walk(fmt: str, data: bytes) -> Structure | None:
    """The structure of a PNG, JPEG or TIFF (``fmt`` as imageio sniffs it); None for the
    formats whose decoders read the header exactly as Pillow does (BMP, WebP)."""
    walker = _WALKERS.get(fmt)
    return walker(data) if walker else None


# --------------------------------------------------------------------------- PNG

# What OpenCV is given of a PNG: the chunks that make its IMREAD_UNCHANGED pixels. The rest
# (text, colour profiles, EXIF, APNG frames) it would read without applying any of it to those
# pixels, and reading them is where it is vulnerable: its APNG reader allocates whatever length
# a chunk declares, libpng inflates every zTXt. EXIF orientation is read from Pillow's header.
_PIXEL_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})
# Everything else is ancillary. A photo has a handful (sRGB, pHYs, iCCP, an XMP iTXt), an
# animated PNG two per frame; Pillow's header reader parses those before the first IDAT in
# Python, one by one.
MAX_PNG_ANCILLARY_CHUNKS = 256
# The walk is a Python loop over chunks (~0.5 µs each). libpng writes IDATs of 8 KB (a 50 MB
# file has 6,400); empty chunks could make a 50 MB file 4 million of them.
MAX_PNG_CHUNKS = 100_000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEADER = struct.Struct(">I4s")


def walk_png(data: bytes) -> Structure:
    """Every chunk must lie inside the file and IHDR must come first, once; the counts of
    chunks are bounded. The pixel data is the file reduced to the pixel chunks."""
    size, pos = len(data), len(_PNG_SIGNATURE)
    kept: list[tuple[int, int]] = [(0, pos)]  # spans of the file the decoder gets
    chunks = ancillary = 0
    while True:
        if pos + 12 > size:
            raise StructureError(CORRUPT)  # ended without IEND
        length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        end = pos + 12 + length
        if end > size or not kind.isalpha():
            raise StructureError(CORRUPT)
        chunks += 1
        if (kind == b"IHDR") != (chunks == 1) or (chunks == 1 and length != 13):
            raise StructureError(CORRUPT)
        if chunks > MAX_PNG_CHUNKS:
            raise StructureError(f"PNG has more than {MAX_PNG_CHUNKS:,} chunks")
        if kind in _PIXEL_CHUNKS:
            if kept[-1][1] == pos:
                kept[-1] = (kept[-1][0], end)
            else:
                kept.append((pos, end))
        elif kind[0] & 0x20 == 0:  # an unknown critical chunk: libpng refuses the file
            raise StructureError(CORRUPT)
        else:
            ancillary += 1
            if ancillary > MAX_PNG_ANCILLARY_CHUNKS:
                raise StructureError(f"PNG has more than {MAX_PNG_ANCILLARY_CHUNKS} ancillary chunks "
                                     "(text, metadata or animation frames)")
        pos = end
        if kind == b"IEND":
            break
    width, height = struct.unpack_from(">II", data, 16)
    if kept == [(0, pos)]:  # nothing to leave out (trailing bytes after IEND are ignored)
        return Structure((width, height), data)
    view = memoryview(data)
    return Structure((width, height), b"".join(view[start:end] for start, end in kept))


# --------------------------------------------------------------------------- JPEG

# libjpeg-turbo decodes every scan of a progressive JPEG over every block it covers: an AC
# refinement scan of the whole image costs a pass over 63 coefficients of each block for a
# few bytes of file, so scans, not bytes, set the time. libjpeg writes 10 scans for colour,
# 6 for gray; encoders that tune the progression (mozjpeg, jpegtran -scans) stay within a few
# dozen. 64 leaves room for those, and at the pixel limit the worst such file (64 whole-image
# refinement scans) decodes in about the time of a progressive photo of that size
# (tests/live/test_decode_gate.py measures it).
MAX_JPEG_SCANS = 64
# Segments outside the scans: markers, tables, APPn (an ICC profile may be split into up to
# 255 APP2 segments). Pillow's header reader walks those before the first scan in Python.
MAX_JPEG_SEGMENTS = 1024
_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended sequential, progressive
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length follows
# The marker that ends a scan's entropy-coded data. Inside it a 0xFF data byte is written as
# FF 00 and restart markers (FF D0-D7) belong to the scan, so any other FF xx is a real marker
# (FF FF is fill before one: the pattern matches at its last FF).
_END_OF_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def walk_jpeg(data: bytes) -> Structure:
    """Segments from SOI to EOI: one frame header, at most MAX_JPEG_SCANS scans and
    MAX_JPEG_SEGMENTS segments, every length inside the file, nothing between segments
    (libjpeg skips stray bytes with a warning; Pillow's header reader skips them one by one
    in Python, seconds for megabytes), and the end-of-image marker after the last scan
    (OpenCV 4.x paints a truncated image's missing rows gray instead of refusing it). An EXIF
    thumbnail's own markers are inside its APP1 segment, which is skipped whole."""
    size, pos = len(data), 2  # after SOI
    frame: tuple[int, int] | None = None
    channels: int | None = None
    scans = segments = 0
    while True:
        if pos + 2 > size or data[pos] != 0xFF:
            raise StructureError(CORRUPT)
        marker = data[pos + 1]
        if marker == _EOI:
            if scans == 0:
                raise StructureError(CORRUPT)
            return Structure(frame, data, channels)
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in (0x00, 0xFF, _SOI) or pos + 4 > size:
            raise StructureError(CORRUPT)
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise StructureError(f"JPEG has more than {MAX_JPEG_SEGMENTS} segments")
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > size:
            raise StructureError(CORRUPT)
        if marker in _SOF_MARKERS:
            if frame is not None or length < 8:  # libjpeg refuses a second frame header
                raise StructureError(CORRUPT)
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            frame = (width, height)
            # Huffman-coded 8-bit gray or colour (baseline, extended, progressive): simplejpeg's
            # libjpeg-turbo decodes it; CMYK, 12-bit, lossless and arithmetic coding go to OpenCV.
            if marker in _HUFFMAN_SOF and precision == 8 and components in (1, 3):
                channels = components
        if marker != _SOS:
            pos = end
            continue
        if frame is None:
            raise StructureError(CORRUPT)
        scans += 1
        if scans > MAX_JPEG_SCANS:
            raise StructureError(f"JPEG has more than {MAX_JPEG_SCANS} scans (a normal progressive JPEG has about 10)")
        found = _END_OF_SCAN.search(data, end)
        if found is None:
            raise StructureError(CORRUPT)  # the scan runs to the end of the file
        pos = found.start()


# --------------------------------------------------------------------------- TIFF

# Tags in the first directory: a baseline TIFF has about 15, a camera's up to ~60. Pillow and
# libtiff each read them all.
MAX_TIFF_TAGS = 128
# Values of one numeric tag. Pillow unpacks them into a tuple of Python ints (12 M values of a
# 50 MB file: 1.5 s, 200 MB); StripOffsets of a 16384-row image in 1-row strips, 4 planes, is 65,536.
MAX_TIFF_VALUES = 2**18
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
                    16: 8, 17: 8, 18: 8}
_TIFF_BYTE_TYPES = frozenset({1, 2, 7})  # BYTE, ASCII, UNDEFINED: Pillow keeps these as bytes
_IMAGE_WIDTH, _IMAGE_LENGTH = 256, 257
_SHORT, _LONG = 3, 4


def walk_tiff(data: bytes) -> Structure:
    """The first directory (the image OpenCV decodes): no tag twice (Pillow keeps the last
    ImageWidth, libtiff the first: a file Pillow reads as 64×48 was decoded at 20000×20000),
    at most MAX_TIFF_TAGS tags, every value inside the file, and one plain number for each
    dimension. Only classic TIFF gets here: imageio does not accept BigTIFF."""
    order = "<" if data[:2] == b"II" else ">"
    size = len(data)
    if size < 8:
        raise StructureError(CORRUPT)
    (directory,) = struct.unpack_from(order + "I", data, 4)
    if directory < 8 or directory + 2 > size:
        raise StructureError(CORRUPT)
    (count,) = struct.unpack_from(order + "H", data, directory)
    if count > MAX_TIFF_TAGS:
        raise StructureError(f"TIFF has {count} tags in its first directory, the limit is {MAX_TIFF_TAGS}")
    if count == 0 or directory + 2 + 12 * count > size:
        raise StructureError(CORRUPT)
    entry = struct.Struct(order + "HHI4s")
    seen: set[int] = set()
    dimensions: dict[int, int] = {}
    for index in range(count):
        tag, kind, values, field = entry.unpack_from(data, directory + 2 + 12 * index)
        if tag in seen:
            raise StructureError(f"TIFF has tag {tag} ({TiffTags.lookup(tag).name}) twice in its first directory")
        seen.add(tag)
        unit = _TIFF_TYPE_SIZES.get(kind)
        if unit is None:
            continue  # a type neither reader knows: both skip the tag
        if kind not in _TIFF_BYTE_TYPES and values > MAX_TIFF_VALUES:
            raise StructureError(f"TIFF tag {tag} has {values:,} values, the limit is {MAX_TIFF_VALUES:,}")
        if values * unit > 4 and struct.unpack(order + "I", field)[0] + values * unit > size:
            raise StructureError(CORRUPT)
        if tag in (_IMAGE_WIDTH, _IMAGE_LENGTH):
            if kind not in (_SHORT, _LONG) or values != 1:
                raise StructureError(CORRUPT)
            dimensions[tag] = struct.unpack_from(order + ("H" if kind == _SHORT else "I"), field)[0]
    if len(dimensions) != 2:
        raise StructureError(CORRUPT)
    return Structure((dimensions[_IMAGE_WIDTH], dimensions[_IMAGE_LENGTH]), data)


_WALKERS = {"PNG": walk_png, "JPEG": walk_jpeg, "TIFF": walk_tiff}
