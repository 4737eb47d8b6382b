"""JPEG written in parallel: horizontal strips encoded at once, joined by restart markers.

libjpeg compresses a picture on one core (a 2560×1920 result: 10–13 ms on the development box,
about twice that on the GPU box's cores, where PNG's segments take a fraction of it on all cores:
lama.png). A baseline JPEG's blocks are coded one after another, each DC coefficient as the
difference from the one before, but a restart marker (RSTn, announced by a DRI segment with the
number of MCUs between two of them) resets that prediction: the data between two markers stands
alone. So the picture is cut into strips of whole MCU rows, each strip encoded as a JPEG of its own
by libjpeg-turbo (simplejpeg, which releases the GIL) on lama.parallel's pool, and the strips'
entropy-coded data joined behind the first strip's headers (its frame header given the whole
height, and a DRI with the strip's MCU count) with RST0..RST7 between them: one ordinary baseline
JPEG that every decoder reads, and whose pixels are those of the picture encoded whole (the blocks
and their coefficients are the same; chroma is averaged within each MCU, which a strip holds whole).

The strips share their tables because libjpeg-turbo writes the same quantization tables for the same
quality and the standard Huffman tables (no optimised coding) whatever the pixels; that is checked
for every strip. An image is cut into at most 16 strips of at least 256 K pixels, whatever the
machine, so that the same picture gives the same file everywhere; a smaller one is one strip, in the
calling thread. EXIF and the ICC profile go into APP1 and APP2 segments after the JFIF header, as
Pillow writes them.
"""

from __future__ import annotations

import struct

import numpy as np
import simplejpeg

from lama import parallel

MAX_STRIPS = 16
MIN_STRIP_PIXELS = 256 * 1024
CHROMA_SUBSAMPLING = "420"  # what Pillow (and most cameras) write: chroma at half resolution both ways

_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
_SOF0, _DRI, _SOS, _APP0 = b"\xff\xc0", b"\xff\xdd", b"\xff\xda", b"\xff\xe0"
_RST0 = 0xD0
_MAX_SEGMENT_PAYLOAD = 65_533  # a marker segment's length field counts itself: 2 bytes of 65,535
_ICC_CHUNK_HEADER = b"ICC_PROFILE\0"
_ICC_CHUNK_BYTES = _MAX_SEGMENT_PAYLOAD - len(_ICC_CHUNK_HEADER) - 2  # 2: the chunk's number and count
_MAX_RESTART_INTERVAL = 65_535  # MCUs, DRI's 16 bits


def encode(image: np.ndarray, quality: int = 95, exif: bytes | None = None,
           icc_profile: bytes | None = None) -> bytes:
    """JPEG bytes of an H×W (gray) or H×W×3 (RGB) uint8 array at `quality` (1..100).

    The caller checks the array and its size (imageio.encode_image does: at most 65,535 a side).
    `exif` ("Exif\\0\\0" and a TIFF-structured block, at most what one segment holds) and
    `icc_profile` go into APP1 and APP2 segments. ValueError for what a JPEG cannot hold.
    """
    gray = image.ndim == 2
    pixels = image[:, :, None] if gray else image
    height, width = pixels.shape[:2]
    mcu = 8 if gray else 16  # 4:2:0: an MCU is 16×16 pixels; gray: one 8×8 block
    rows = strip_rows(width, height, mcu)
    strips = [np.ascontiguousarray(pixels[top:top + rows]) for top in range(0, height, rows)]
    colourspace, subsampling = ("GRAY", "Gray") if gray else ("RGB", CHROMA_SUBSAMPLING)
    encoded = parallel.run_all(lambda strip: simplejpeg.encode_jpeg(strip, quality, colourspace, subsampling),
                               strips)
    split = [_split(strip) for strip in encoded]
    headers = split[0][0]
    shared = _tables(headers)
    segments = []
    for marker, payload in headers:
        if marker == _SOF0:  # precision, then the height: the whole picture's
            payload = payload[:1] + struct.pack(">H", height) + payload[3:]
        if marker == _SOS and len(strips) > 1:
            segments.append(_segment(_DRI, struct.pack(">H", (rows // mcu) * -(-width // mcu))))
        segments.append(_segment(marker, payload))
    after_jfif = 1 if headers[0][0] == _APP0 else 0
    segments[after_jfif:after_jfif] = _metadata_segments(exif, icc_profile)
    parts = [_SOI, *segments]
    for index, (strip_headers, data) in enumerate(split):
        if _tables(strip_headers) != shared:
            raise ValueError("libjpeg wrote different tables for two strips of one picture")
        if index:
            parts.append(bytes((0xFF, _RST0 + (index - 1) % 8)))
        parts.append(data)
    parts.append(_EOI)
    return b"".join(parts)


def strip_rows(width: int, height: int, mcu: int) -> int:
    """Rows per strip: whole MCU rows, at most MAX_STRIPS strips of at least MIN_STRIP_PIXELS pixels,
    and no more MCUs between two restart markers than DRI can count."""
    strips = max(1, min(MAX_STRIPS, width * height // MIN_STRIP_PIXELS))
    rows = -(-height // strips)
    mcu_rows = min(-(-rows // mcu), _MAX_RESTART_INTERVAL // -(-width // mcu))
    return mcu_rows * mcu


def _split(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """A JPEG as libjpeg-turbo writes it: its marker segments up to and including SOS, as
    (marker, payload), and the entropy-coded data between SOS and EOI."""
    if data[:2] != _SOI or data[-2:] != _EOI:
        raise ValueError("not a JPEG as libjpeg writes one")
    position, segments = 2, []
    while True:
        marker = data[position:position + 2]
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        segments.append((marker, data[position + 4:position + 2 + length]))
        position += 2 + length
        if marker == _SOS:
            return segments, data[position:-2]


def _tables(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """What a strip's headers must share with the others': all but the frame header (its height)."""
    return [(marker, payload) for marker, payload in headers if marker != _SOF0]


def _segment(marker: bytes, payload: bytes) -> bytes:
    if len(payload) > _MAX_SEGMENT_PAYLOAD:
        raise ValueError(f"a JPEG segment holds at most {_MAX_SEGMENT_PAYLOAD} bytes, not {len(payload)}")
    return marker + struct.pack(">H", len(payload) + 2) + payload


def _metadata_segments(exif: bytes | None, icc_profile: bytes | None) -> list[bytes]:
    """EXIF in APP1; the ICC profile in APP2 chunks, numbered from 1 (the ICC's own convention)."""
    segments = [_segment(b"\xff\xe1", exif)] if exif else []
    if icc_profile:
        chunks = [icc_profile[start:start + _ICC_CHUNK_BYTES] for start in range(0, len(icc_profile), _ICC_CHUNK_BYTES)]
        if len(chunks) > 255:
            raise ValueError(f"an ICC profile of {len(icc_profile)} bytes does not fit a JPEG's 255 APP2 chunks")
        segments += [_segment(b"\xff\xe2", _ICC_CHUNK_HEADER + bytes((number, len(chunks))) + chunk)
                     for number, chunk in enumerate(chunks, 1)]
    return segments
